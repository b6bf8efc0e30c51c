"""``python -m agents.match`` on a violin-like recording gets the note right without the CREPE
extra (the pure-JAX YIN estimator), and the harness reads the played note of a WAV set."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents.evaluation.harness import f0_error_cents, played_notes_hz
from agents.match import main
from jaxsynth import crepe as C
from jaxsynth import pitch as PP
from jaxsynth.io import load_audio, save_audio

SR = 22050
DURATION_S = 0.25


def violin_like(f0_hz: float, seed: int = 0) -> np.ndarray:
    """A bowed-string-like note: harmonics shaped by body resonances (~280, 500, 1,600 and
    2,800 Hz), 5.5 Hz vibrato of +-15 cents, bow noise 30 dB down, a 60 ms attack."""
    n = int(SR * DURATION_S)
    t = np.arange(n) / SR
    inst_hz = f0_hz * 2.0 ** (15.0 * np.sin(2 * np.pi * 5.5 * t) / 1200.0)
    phase = 2 * np.pi * np.cumsum(inst_hz) / SR
    body = lambda f: sum(g / (1.0 + ((f - fc) / bw) ** 2) for fc, bw, g in
                         ((280, 80, 1.0), (500, 150, 0.8), (1600, 400, 0.6), (2800, 600, 0.4)))
    x = sum(body(k * f0_hz) / k ** 0.5 * np.sin(k * phase) for k in range(1, 30) if k * f0_hz < 0.45 * SR)
    x = x + 10 ** (-30 / 20) * np.std(x) * np.random.default_rng(seed).normal(size=n)
    x = x * np.minimum(t / 0.06, 1.0)
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


@pytest.fixture
def no_crepe(monkeypatch):
    """As if the ``crepe`` extra were not installed and no weights were cached."""
    def unavailable(model="tiny"):
        raise C.CrepeUnavailableError(f"CREPE '{model}' weights unavailable: {C.INSTALL_HINT}")

    monkeypatch.setattr(C, "load_weights_numpy", unavailable)
    monkeypatch.setattr(C, "load_weights", unavailable)


def test_match_cli_gets_the_violin_note_without_crepe(tmp_path, no_crepe):
    assert not PP.crepe_available() and PP.resolve_method("auto") == "yin"
    with pytest.raises(C.CrepeUnavailableError, match="jaxsynth\\[crepe\\]"):
        PP.estimate_note(violin_like(293.66), SR, "crepe")
    wav = tmp_path / "violin_D4.wav"
    save_audio(wav, violin_like(293.66), SR)  # D4, not the synth's default note (C4)
    out = tmp_path / "out"
    rc = main([str(wav), "--method", "cmaes", "--budget", "40", "--duration-s", str(DURATION_S),
               "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "match.json").read_text())
    assert summary["pitch_first"] is True
    match = load_audio(out / "match.wav", SR)
    note = PP.estimate_note(match, SR, "yin")
    assert note.pitched
    assert abs(PP.cents_between(note.f0_hz, 293.66)) < 50.0


def test_played_notes_from_sidecar_and_name(tmp_path):
    (tmp_path / "notes.csv").write_text("file,midi_note,f0_hz\na.wav,62,293.6648\nb.wav,57,\n")
    files = ["a.wav", "b.wav", "cello_D3_m50.wav", "drum.wav"]
    hz = played_notes_hz(str(tmp_path), files)
    np.testing.assert_allclose(hz[:3], [293.6648, 220.0, 146.8324], rtol=1e-5)
    assert np.isnan(hz[3])


def test_f0_error_cents_counts_unpitched_matches_as_wrong():
    t = np.arange(int(SR * DURATION_S)) / SR
    tone = (0.3 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
    noise = (0.3 * np.random.default_rng(0).normal(size=t.size)).astype(np.float32)
    err = f0_error_cents(np.stack([tone, noise, tone]), np.array([233.08, 220.0, np.nan]), SR, "yin")
    assert abs(err[0] - 100.0) < 3.0
    assert err[1] == 1200.0
    assert np.isnan(err[2])
