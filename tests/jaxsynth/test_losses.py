"""Tests for jaxsynth/losses.py.

Reference: auraloss 0.4 (torch CPU) ``STFTLoss`` / ``MultiResolutionSTFTLoss`` with our
settings (Hann windows of the FFT size, hop = size/4, w_sc = w_log_mag = 1, w_lin_mag = 0,
eps = 1e-8). Tolerance: relative 1e-3 per term; both sides are float32 FFTs of the same
reflect-padded frames, and the log-magnitude mean over ~20k bins agrees to ~1e-5.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from auraloss.freq import MultiResolutionSTFTLoss, STFTLoss

from jaxsynth import features as F
from jaxsynth import losses as L

CFG = F.FeatureConfig()
SR = CFG.sample_rate
N = CFG.num_samples
T = np.arange(N) / SR


def harmonic(f0_hz, amp=0.3, n=8):
    return (amp * sum(np.sin(2 * np.pi * k * f0_hz * T) / k for k in range(1, n + 1))).astype(np.float32)


def noise(seed, amp=0.1):
    return (amp * np.random.default_rng(seed).standard_normal(N)).astype(np.float32)


PRED = harmonic(230.0) + noise(1, 0.02)
TARGET = harmonic(220.0) * np.exp(-3 * T).astype(np.float32) + noise(2, 0.01)


def ours_mrstft_raw(pred, target):
    """Our MR-STFT on raw (not loudness-normalised) audio, as auraloss sees it."""
    mags = lambda x: tuple(F.magnitude(F.stft_power(jnp.asarray(x), n, h)) for n, h in CFG.mrstft_resolutions)
    return L.multi_resolution_stft(mags(pred), mags(target))


def test_cached_target_norms_give_the_same_loss():
    """``target_mrstft_norms`` (the bank's cached ||target||_F per resolution) replaces a sum
    over the target's bins by the same sum computed elsewhere: every term agrees to float32
    rounding of sums over <= 22,600 bins (rtol 1e-6), inside jit and batched."""
    pred = F.analyze(jnp.stack([jnp.asarray(PRED), jnp.asarray(TARGET)]), CFG)
    target = F.analyze(jnp.stack([jnp.asarray(TARGET), jnp.asarray(harmonic(110.0))]), CFG)
    plain = jax.jit(L.matching_loss)(pred, target)
    norms = L.mrstft_norms(target.mrstft_mag)
    assert all(n.shape == (2,) for n in norms)
    cached = jax.jit(lambda p, t, n: L.matching_loss(p, t, target_mrstft_norms=n))(pred, target, norms)
    for name in L.LossTerms._fields:
        np.testing.assert_allclose(getattr(cached, name), getattr(plain, name), rtol=1e-6, atol=1e-7,
                                   err_msg=name)
    assert float(plain.spectral_convergence[0]) > 0.1  # a real mismatch, not two zeros


def torch_audio(x):
    return torch.from_numpy(np.asarray(x, np.float32)).view(1, 1, -1)


@pytest.mark.parametrize("n_fft", CFG.mrstft_fft_sizes)
def test_single_resolution_terms_match_auraloss(n_fft):
    loss = STFTLoss(fft_size=n_fft, hop_size=n_fft // 4, win_length=n_fft, window="hann_window",
                    w_sc=1.0, w_log_mag=1.0, w_lin_mag=0.0, output="full")
    _, sc_ref, lm_ref, _, _ = loss(torch_audio(PRED), torch_audio(TARGET))
    pm = F.magnitude(F.stft_power(jnp.asarray(PRED), n_fft, n_fft // 4))
    tm = F.magnitude(F.stft_power(jnp.asarray(TARGET), n_fft, n_fft // 4))
    assert float(L.spectral_convergence(pm, tm)) == pytest.approx(float(sc_ref), rel=1e-3)
    assert float(L.log_magnitude_l1(pm, tm)) == pytest.approx(float(lm_ref), rel=1e-3)


@pytest.mark.parametrize("pair", ["tones", "noise_vs_tone", "quiet"])
def test_mrstft_matches_auraloss(pair):
    pred, target = {"tones": (PRED, TARGET), "noise_vs_tone": (noise(3, 0.5), TARGET),
                    "quiet": (1e-3 * PRED, TARGET)}[pair]
    ref = MultiResolutionSTFTLoss(
        fft_sizes=list(CFG.mrstft_fft_sizes), hop_sizes=[n // 4 for n in CFG.mrstft_fft_sizes],
        win_lengths=list(CFG.mrstft_fft_sizes), window="hann_window", w_sc=1.0, w_log_mag=1.0,
        w_lin_mag=0.0)(torch_audio(pred), torch_audio(target))
    sc, lm = ours_mrstft_raw(pred, target)
    assert float(sc + lm) == pytest.approx(float(ref), rel=1e-3)


def analyze(x):
    return F.analyze(jnp.asarray(x), CFG)


def test_identical_audio_gives_zero_loss():
    terms = L.matching_loss(analyze(TARGET), analyze(TARGET))
    for name, value in terms._asdict().items():
        assert abs(float(value)) < 1e-6, name


def test_different_audio_gives_positive_terms():
    terms = L.matching_loss(analyze(PRED), analyze(TARGET))
    for name, value in terms._asdict().items():
        if name in ("crepe_embedding", "pitch_posterior_cents"):  # weight 0: not computed
            assert float(value) == 0.0, name
        else:
            assert float(value) > 0, name


def test_total_is_weighted_sum_and_mrstft_is_sc_plus_logmag():
    weights = L.LossWeights(mrstft=0.7, mfcc_l1=0.3, log_mel_l1=0.2, centroid_oct=2.0, loudness_lu=0.5)
    t = L.matching_loss(analyze(PRED), analyze(0.3 * TARGET), weights)
    expected = (0.7 * t.mrstft + 0.3 * t.mfcc_l1 + 0.2 * t.log_mel_l1 + 2.0 * t.centroid_oct
                + 0.5 * t.loudness_lu)
    assert float(t.total) == pytest.approx(float(expected), rel=1e-6)
    assert float(t.mrstft) == pytest.approx(float(t.spectral_convergence + t.log_magnitude), rel=1e-6)


def test_loss_is_monotone_in_detuning():
    target = analyze(harmonic(220.0))
    cents = [0, 10, 25, 50, 100, 200]
    totals, mrstft, mfcc = [], [], []
    for c in cents:
        t = L.matching_loss(analyze(harmonic(220.0 * 2 ** (c / 1200))), target)
        totals.append(float(t.total))
        mrstft.append(float(t.mrstft))
        mfcc.append(float(t.mfcc_l1))
    assert totals[0] < 1e-6
    for series in (totals, mrstft, mfcc):
        assert np.all(np.diff(series) > 0), series


def test_centroid_term_is_in_octaves():
    tone = lambda f: (0.5 * np.sin(2 * np.pi * f * T)).astype(np.float32)
    t = L.matching_loss(analyze(tone(1000.0)), analyze(tone(2000.0)))
    assert float(t.centroid_oct) == pytest.approx(1.0, abs=0.05)
    t = L.matching_loss(analyze(tone(440.0)), analyze(tone(440.0 * 2 ** (-1.5))))
    assert float(t.centroid_oct) == pytest.approx(1.5, abs=0.05)


def test_level_moves_only_the_loudness_term():
    """Spectral terms see loudness-normalised audio: changing the output level cannot buy
    spectral loss (SC of a quiet output would otherwise tend to 1 whatever its spectrum)."""
    target = analyze(TARGET)
    full, quiet = (L.matching_loss(analyze(g * PRED), target) for g in (1.0, 0.01))
    for name in ("spectral_convergence", "log_magnitude", "mfcc_l1", "log_mel_l1", "centroid_oct"):
        assert float(getattr(quiet, name)) == pytest.approx(float(getattr(full, name)), rel=2e-3, abs=2e-3), name
    loud_pred, loud_target = float(analyze(PRED).loudness_lufs), float(target.loudness_lufs)
    assert float(quiet.loudness_lu) == pytest.approx(abs(loud_pred - 40.0 - loud_target), abs=0.05)


def test_precomputed_target_equals_audio_convenience():
    cached = jax.jit(F.analyze, static_argnums=1)(jnp.asarray(TARGET), CFG)
    a = L.matching_loss(analyze(PRED), cached)
    b = L.matching_loss_audio(jnp.asarray(PRED), jnp.asarray(TARGET), CFG)
    for x, y in zip(a, b):
        assert float(x) == pytest.approx(float(y), rel=1e-5, abs=1e-6)


def test_batched_loss_matches_single():
    preds = jnp.asarray(np.stack([PRED, harmonic(300.0), noise(4)]))
    batched = L.matching_loss_audio(preds, jnp.asarray(TARGET)[None].repeat(3, 0), CFG)
    for i in range(3):
        single = L.matching_loss_audio(preds[i], jnp.asarray(TARGET), CFG)
        # A batch of 3 and one clip run differently vectorized FFT/matmul/reduction kernels:
        # float32 reassociation, ~1e-7 relative per operation, over sums of ~1e3-1e4 bins gives
        # <= ~1e-5 relative per term (the loudness normalization gain, a 10^(dB/20), passes a
        # 1e-6 dB change on as 1e-7). 1e-4 relative (1e-5 absolute for terms near 0) is 10x that
        # and far below any loss difference that matters (terms are O(0.1-10)).
        np.testing.assert_allclose([float(v[i]) for v in batched], [float(v) for v in single],
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", ["silent_pred", "silent_both", "full_scale_noise", "identical", "dc"])
def test_loss_and_gradient_are_finite(case):
    rng = np.random.default_rng(9)
    full_noise = rng.uniform(-1, 1, N).astype(np.float32)
    pred, target = {
        "silent_pred": (np.zeros(N, np.float32), TARGET),
        "silent_both": (np.zeros(N, np.float32), np.zeros(N, np.float32)),
        "full_scale_noise": (full_noise, TARGET),
        "identical": (TARGET, TARGET),
        "dc": (np.full(N, 0.5, np.float32), full_noise),
    }[case]
    target_feats = analyze(target)
    loss_fn = jax.jit(lambda x: L.matching_loss(F.analyze(x, CFG), target_feats).total)
    value, grad = jax.value_and_grad(loss_fn)(jnp.asarray(pred))
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(np.asarray(grad)))
    if case == "full_scale_noise":
        assert float(jnp.abs(grad).max()) > 0


def test_gradient_through_synth_render_is_finite_and_nonzero():
    synth = pytest.importorskip("jaxsynth.synth")
    from jaxsynth import params as P

    scfg = synth.SynthConfig()
    cfg = dataclasses.replace(CFG, sample_rate=scfg.sample_rate, duration_s=scfg.duration_s)
    key = jax.random.PRNGKey(0)
    target_p = P.sample_params01(jax.random.PRNGKey(1), np.ones(P.N_MODULES, bool))
    target = F.analyze(synth.render(target_p, key, scfg), cfg)

    def loss(p01):
        return L.matching_loss(F.analyze(synth.render(p01, key, scfg), cfg), target).total

    value, grad = jax.jit(jax.value_and_grad(loss))(jnp.asarray(P.DEFAULT_PARAMS01))
    assert np.isfinite(float(value)) and float(value) > 0
    assert np.all(np.isfinite(np.asarray(grad)))
    assert float(jnp.abs(grad).max()) > 0


def test_eager_audio_loss_rejects_non_finite_and_integer_audio():
    # one NaN sample made every term NaN, silently; int16 PCM was analysed at 32768x its level
    clip = np.asarray(jax.random.uniform(jax.random.key(5), (CFG.num_samples,), minval=-0.3, maxval=0.3))
    bad = clip.copy()
    bad[17] = np.nan
    with pytest.raises(ValueError, match=r"matching_loss_audio \(pred_audio\): audio has 1 NaN/Inf"):
        L.matching_loss_audio(bad, clip, CFG)
    with pytest.raises(ValueError, match=r"\(target_audio\).*first at index \(17,\)"):
        L.matching_loss_audio(clip, bad, CFG)
    with pytest.raises(TypeError, match=r"floating point.*int16"):
        L.matching_loss_audio((clip * 32767).astype(np.int16), clip, CFG)
