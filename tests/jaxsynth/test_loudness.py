"""Tests for jaxsynth/loudness.py against references we did not write.

References: pyloudnorm (BS.1770-4 integrated loudness), the BS.1770-4 48 kHz K-weighting
table (Tables 1 and 2), and scipy.signal.lfilter for the biquad recursion.

Tolerance: loudness 0.5 LU: pyloudnorm derives its 22.05 kHz K-weighting from different
analog prototypes (RBJ shelf at 1.5 kHz) than we do (libebur128's fit to the standard),
which moves results by ~0.1 LU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pyloudnorm
import pytest
from scipy.signal import lfilter

from jaxsynth import loudness as L
from jaxsynth.features import FeatureConfig

from shared_helpers import harmonic, sine

CFG = FeatureConfig()
SR = CFG.sample_rate


def pink_noise(n, rng):
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    x = np.fft.irfft(spec, n)
    return (0.2 * x / np.std(x)).astype(np.float32)


def _sample_clip():
    rng = np.random.default_rng(0)
    return (sine(440.0, CFG.duration_s) + 0.05 * rng.standard_normal(CFG.num_samples)).astype(np.float32)


CLIP = _sample_clip()


def test_k_weighting_reproduces_standard_48k_table():
    (shelf_b, shelf_a), (hp_b, hp_a) = L.k_weighting_coeffs(48000)
    # ITU-R BS.1770-4, Tables 1 and 2
    np.testing.assert_allclose(shelf_b, [1.53512485958697, -2.69169618940638, 1.19839281085285],
                               atol=1e-8)
    np.testing.assert_allclose(shelf_a, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-8)
    np.testing.assert_allclose(hp_b, [1.0, -2.0, 1.0])
    np.testing.assert_allclose(hp_a, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-8)


@pytest.mark.parametrize("method", ["fir", "scan"])
@pytest.mark.parametrize("sr", [22050, 48000])
def test_k_weight_filter_matches_lfilter(method, sr):
    x = np.concatenate([CLIP, -CLIP[::-1]])  # 1 s at 22.05 kHz: longer than the FIR
    (sb, sa), (hb, ha) = L.k_weighting_coeffs(sr)
    ref = lfilter(hb, ha, lfilter(sb, sa, x.astype(np.float64)))
    ours = np.asarray(L.k_weight(jnp.asarray(x), sr, method))
    # float32 recursion near the 38 Hz double pole (|p| ~ 0.99) accumulates rounding: ~4e-5
    tolerance = {"fir": 1e-5, "scan": 1e-4}[method]
    np.testing.assert_allclose(ours, ref, atol=tolerance * np.abs(ref).max())


def test_loudness_fir_equals_scan():
    x = jnp.asarray(np.stack([CLIP, harmonic(110.0), np.zeros_like(CLIP)]))
    np.testing.assert_allclose(L.loudness_lufs(x, SR, k_weighting="fir"),
                               L.loudness_lufs(x, SR, k_weighting="scan"), atol=1e-3)


LOUDNESS_CASES = [(f, a) for f in (100.0, 1000.0, 5000.0) for a in (1.0, 0.1, 0.003)]


@pytest.mark.parametrize("freq_hz,amp", LOUDNESS_CASES)
def test_loudness_of_tones_matches_pyloudnorm(freq_hz, amp):
    x = sine(freq_hz, 1.5, amp)
    ref = pyloudnorm.Meter(SR).integrated_loudness(x.astype(np.float64))
    assert abs(float(L.loudness_lufs(jnp.asarray(x), SR)) - ref) < 0.5


@pytest.mark.parametrize("kind", ["white", "pink"])
@pytest.mark.parametrize("sr", [22050, 44100])
def test_loudness_of_noise_matches_pyloudnorm(kind, sr):
    rng = np.random.default_rng(3)
    x = (0.2 * rng.standard_normal(2 * sr)).astype(np.float32) if kind == "white" else pink_noise(2 * sr, rng)
    ref = pyloudnorm.Meter(sr).integrated_loudness(x.astype(np.float64))
    assert abs(float(L.loudness_lufs(jnp.asarray(x), sr)) - ref) < 0.5


def test_loudness_relative_gate_matches_pyloudnorm():
    # 1 s loud, 2 s 25 dB quieter: the relative gate drops the quiet blocks
    x = np.concatenate([sine(1000.0, 1.0, 0.5), sine(1000.0, 2.0, 0.5 * 10 ** (-25 / 20))])
    ref = pyloudnorm.Meter(SR).integrated_loudness(x.astype(np.float64))
    ungated = -0.691 + 10 * np.log10(np.mean(np.asarray(L.k_weight(jnp.asarray(x), SR)) ** 2))
    assert ref - ungated > 2.0  # the gate matters for this signal
    assert abs(float(L.loudness_lufs(jnp.asarray(x), SR)) - ref) < 0.5


def test_default_half_second_clip_uses_two_gated_blocks():
    assert L.loudness_blocks(CFG.num_samples, SR) == (8820, 2205, 2)
    # a 0.1 s burst then near-silence: block [0.1, 0.5) s is > 10 LU down and is gated out
    x = np.concatenate([sine(1000.0, 0.1, 0.8), sine(1000.0, 0.4, 0.8e-3)])
    ref = pyloudnorm.Meter(SR).integrated_loudness(x.astype(np.float64))
    ours = float(L.loudness_lufs(jnp.asarray(x), SR))
    assert abs(ours - ref) < 0.5
    for y in (CLIP, harmonic(220.0)):
        ref = pyloudnorm.Meter(SR).integrated_loudness(y.astype(np.float64))
        assert abs(float(L.loudness_lufs(jnp.asarray(y), SR)) - ref) < 0.5


def test_clip_shorter_than_a_block_is_one_block():
    x = sine(1000.0, 0.3, 0.25)
    assert L.loudness_blocks(x.size, SR) == (x.size, x.size, 1)
    (sb, sa), (hb, ha) = L.k_weighting_coeffs(SR)
    kw = lfilter(hb, ha, lfilter(sb, sa, x.astype(np.float64)))
    expected = -0.691 + 10 * np.log10(np.mean(kw ** 2))
    ours = float(L.loudness_lufs(jnp.asarray(x), SR))
    assert abs(ours - expected) < 0.01
    # and a steady tone reads (nearly) the same as a long stretch of it measured by pyloudnorm
    long_ref = pyloudnorm.Meter(SR).integrated_loudness(sine(1000.0, 2.0, 0.25).astype(np.float64))
    assert abs(ours - long_ref) < 0.5


@pytest.mark.parametrize("method", ["fir", "scan"])
def test_silence_and_very_quiet_are_finite(method):
    silent = float(L.loudness_lufs(jnp.zeros(CFG.num_samples), SR, k_weighting=method))
    assert silent == pytest.approx(-100.0, abs=1e-3)
    # -80 LUFS tone: below the absolute gate, so the ungated mean is used (pyloudnorm: -inf)
    quiet = sine(1000.0, CFG.duration_s, np.sqrt(2) * 1e-4)  # mean square 1e-8
    value = float(L.loudness_lufs(jnp.asarray(quiet), SR, k_weighting=method))
    assert -81.0 < value < -79.0
    grad = jax.grad(lambda a: L.loudness_lufs(a, SR, k_weighting=method))(jnp.zeros(CFG.num_samples))
    assert np.all(np.isfinite(grad))


def test_loudness_is_differentiable():
    x = jnp.asarray(harmonic(220.0))
    g = jax.grad(lambda a: L.loudness_lufs(a, SR))(x)
    assert np.all(np.isfinite(g)) and float(jnp.abs(g).max()) > 0
    # scaling by 2 adds 6.02 LU; d loudness / d log(gain) = 20 / ln(10)
    dgain = jax.grad(lambda s: L.loudness_lufs(s * x, SR))(1.0)
    assert float(dgain) == pytest.approx(20 / np.log(10), rel=1e-3)


def test_gain_to_reference_is_clipped():
    gain = L.loudness_gain_db(jnp.array([-20.0, -30.0, -100.0, 10.0]), -20.0, 40.0)
    np.testing.assert_allclose(gain, [0.0, 10.0, 40.0, -30.0])


def test_features_reexports_the_loudness_functions():
    from jaxsynth import features as F
    assert F.loudness_lufs is L.loudness_lufs and F.k_weight is L.k_weight
    np.testing.assert_allclose(F.loudness_gain_db(jnp.array(-100.0), CFG), 40.0)


@pytest.mark.parametrize("fn", [lambda x: L.loudness_lufs(x, SR), lambda x: L.k_weight(x, SR)])
def test_eager_calls_reject_non_finite_and_integer_audio(fn):
    x = CLIP.copy()
    x[100] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN/Inf sample\(s\), first at index \(100,\)"):
        fn(x)
    with pytest.raises(ValueError, match=r"NaN/Inf"):
        fn(jnp.asarray(x).at[5].set(jnp.inf))
    with pytest.raises(TypeError, match=r"floating point.*int16.*32768"):
        fn((CLIP * 32767).astype(np.int16))
    # a list of floats is accepted as the array it stands for
    np.testing.assert_allclose(fn(list(map(float, CLIP))), fn(CLIP), rtol=1e-6, atol=1e-6)


def test_traced_calls_are_not_checked():
    # inside jit nothing is checked (no host sync): NaN flows through as before
    x = jnp.asarray(CLIP).at[100].set(jnp.nan)
    assert np.isnan(float(jax.jit(lambda a: L.loudness_lufs(a, SR))(x)))


STFT_CASES = {
    "tone 50 Hz 0.3 s": sine(50.0, 0.3), "tone 100 Hz": sine(100.0, 0.5, 0.003),
    "tone 1 kHz 1.5 s": sine(1000.0, 1.5), "tone 9 kHz": sine(9000.0, 0.5),
    "harmonic": harmonic(220.0), "noise": CLIP,
    "gated": np.concatenate([sine(1000.0, 1.0, 0.5), sine(1000.0, 2.0, 0.5 * 10 ** (-25 / 20))]),
    "burst": np.concatenate([sine(1000.0, 0.1, 0.8), sine(1000.0, 0.4, 0.8e-3)]),
    "decay": (harmonic(220.0) * np.exp(-8 * np.arange(CFG.num_samples) / SR)).astype(np.float32),
}


@pytest.mark.parametrize("name", list(STFT_CASES))
def test_loudness_from_the_stft_matches_the_time_domain_filter(name):
    # K-weighting as |H(f)|^2 on the bins of the 1024/256 Hann STFT, Parseval, the same gating
    from jaxsynth.features import stft_power
    x = STFT_CASES[name]
    from_power = float(L.loudness_from_power(stft_power(jnp.asarray(x), 1024, 256), x.size, SR, 1024, 256))
    assert abs(from_power - float(L.loudness_lufs(jnp.asarray(x), SR))) < 0.2
    if x.size >= 0.4 * SR:  # pyloudnorm needs one whole 400 ms block
        assert abs(from_power - pyloudnorm.Meter(SR).integrated_loudness(x.astype(np.float64))) < 0.5


def test_loudness_from_the_stft_of_silence_is_the_floor_and_needs_overlapping_frames():
    from jaxsynth.features import stft_power
    silent = stft_power(jnp.zeros(CFG.num_samples), 1024, 256)
    assert float(L.loudness_from_power(silent, CFG.num_samples, SR, 1024, 256)) == pytest.approx(-100.0, abs=1e-3)
    with pytest.raises(ValueError, match="divides n_fft at least 3 times"):
        L.loudness_from_power(silent, CFG.num_samples, SR, 1024, 512)
    # Parseval and the overlap-add constant: a frame-wise weight matrix with rows summing to
    # the share of each frame's hop interval inside the clip
    w = L.stft_block_weights(CFG.num_samples, SR, 1024, 256)
    assert w.shape == (1 + CFG.num_samples // 256, 2)
