"""``python -m agents.match`` (agents/match.py): all outputs for a synth-rendered WAV, a clean
failure (status 2, nothing written, existing files intact) for a corrupt one."""

import json
import os

import jax
import numpy as np

from agents import curriculum as C
from agents.match import main
from agents.search.common import MatchConfig, render_params
from jaxsynth import params as P
from jaxsynth.io import load_audio, save_audio
from jaxsynth.synth import SynthConfig

CFG = MatchConfig(synth=SynthConfig(duration_s=0.25))


def test_match_cli_writes_preset_wav_png(tmp_path):
    x = C.heldout_presets(0, 0, 8)[1]
    audio, _ = render_params(x[None], CFG)
    wav = tmp_path / "target.wav"
    save_audio(wav, np.asarray(audio[0]), CFG.synth.sample_rate)
    out = tmp_path / "out"
    rc = main([str(wav), "--method", "cmaes", "--budget", "40", "--stage", "0",
               "--duration-s", "0.25", "--out", str(out)])
    assert rc == 0
    assert sorted(os.listdir(out)) == ["ab.png", "match.json", "match.wav", "preset.json"]
    preset = P.load_preset(out / "preset.json")  # physical units, loads back
    assert preset.shape == (P.N_PARAMS,)
    y = load_audio(out / "match.wav", CFG.synth.sample_rate)
    assert y.shape == (CFG.synth.num_samples,) and np.max(np.abs(y)) > 0
    # The written WAV is the written preset rendered, bit for bit: match_file renders the preset
    # as preset.json loads back (physical units rounded to 6 decimals), with the same compiled
    # program as here (render_params at batch 1), and a float WAV stores float32 exactly. (The
    # unrounded match differs by up to ~1e-4 in the audio: a 6-decimal time or a float32
    # frequency step moves a 0.25 s waveform's phase by that much.)
    again, _ = render_params(preset[None], CFG)
    np.testing.assert_array_equal(y, np.asarray(again[0]))
    assert (out / "ab.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.load(open(out / "match.json"))
    assert summary["loss_terms"]["total"] == min(summary["trace_loss"])
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".out.")]  # temp folder gone


def test_match_cli_fails_cleanly_on_corrupt_file(tmp_path, capsys):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage that is not audio")
    out = tmp_path / "out"
    assert main([str(bad), "--out", str(out), "--duration-s", "0.25"]) == 2
    err = capsys.readouterr().err
    assert "broken.wav" in err and "error" in err
    assert not out.exists()
    assert os.listdir(tmp_path) == ["broken.wav"]  # nothing half-written next to it either
    # an existing output folder is left exactly as it was
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main([str(bad), "--out", str(out)]) == 2
    assert os.listdir(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert main([str(tmp_path / "missing.wav"), "--out", str(out)]) == 2
    assert main([str(bad), "--out", str(out), "--method", "sac"]) == 2
