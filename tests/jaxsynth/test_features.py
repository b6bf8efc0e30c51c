"""Tests for jaxsynth/features.py against references we did not write.

References: librosa 0.11 (mel filterbank, melspectrogram, power_to_db, mfcc, delta,
spectral_centroid). Loudness (BS.1770-4) is tested in test_loudness.py.

Tolerances (float32 JAX vs float64 references):
* filterbank 1e-6 absolute (weights are <= ~0.03; we measure ~2e-9);
* log-mel 0.05 dB where the reference is >= 10 dB above the floor (float32 FFT rounding is
  ~1e-5 dB there; next to the floor, 1e-8 power, float32 rounding of tiny powers dominates);
* MFCC 0.05 (dB units, values up to ~500); deltas 1e-3 dB/frame; centroid 0.1 Hz;
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from jaxsynth import features as F

from shared_helpers import harmonic, sine

CFG = F.FeatureConfig()
SR = CFG.sample_rate


def _sample_clip():
    rng = np.random.default_rng(0)
    return (sine(440.0, CFG.duration_s) + 0.05 * rng.standard_normal(CFG.num_samples)).astype(np.float32)


CLIP = _sample_clip()


def librosa_log_mel(y, cfg=CFG):
    s = librosa.feature.melspectrogram(
        y=y.astype(np.float64), sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
        n_mels=cfg.n_mels, fmin=cfg.fmin_hz, fmax=cfg.fmax_hz_resolved, pad_mode="reflect",
        power=2.0)
    return librosa.power_to_db(s, ref=1.0, amin=10 ** (cfg.log_floor_db / 10), top_db=None).T


# --------------------------------------------------------------------- mel / MFCC / deltas


@pytest.mark.parametrize("cfg", [
    CFG,
    dataclasses.replace(CFG, n_fft=2048, n_mels=40, fmin_hz=30.0, fmax_hz=8000.0),
    dataclasses.replace(CFG, sample_rate=44100, n_mels=128),
])
def test_mel_filterbank_matches_librosa(cfg):
    ref = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                              fmin=cfg.fmin_hz, fmax=cfg.fmax_hz_resolved)
    np.testing.assert_allclose(F.mel_filterbank(cfg), ref.T, atol=1e-6)


def test_log_mel_matches_librosa_away_from_floor():
    ref = librosa_log_mel(CLIP)
    ours = np.asarray(jax.jit(F.log_mel, static_argnums=1)(jnp.asarray(CLIP), CFG))
    chex.assert_shape(ours, (CFG.num_frames, CFG.n_mels))
    assert ref.shape == ours.shape
    away = ref >= CFG.log_floor_db + 10
    assert away.mean() > 0.9
    np.testing.assert_allclose(ours[away], ref[away], atol=0.05)
    assert np.all(ours >= CFG.log_floor_db - 1e-4)


def test_log_mel_floor_is_absolute():
    ours = np.asarray(F.log_mel(jnp.zeros(CFG.num_samples), CFG))
    np.testing.assert_allclose(ours, CFG.log_floor_db, atol=1e-4)


def test_mfcc_matches_librosa():
    ref_log_mel = librosa_log_mel(CLIP)
    ref = librosa.feature.mfcc(S=ref_log_mel.T, n_mfcc=CFG.n_mfcc).T
    ours = np.asarray(F.mfcc_from_log_mel(F.log_mel(jnp.asarray(CLIP), CFG), CFG.n_mfcc))
    chex.assert_shape(ours, (CFG.num_frames, CFG.n_mfcc))
    np.testing.assert_allclose(ours, ref, atol=0.05)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("width", [9, 5])
def test_delta_matches_librosa(order, width):
    data = librosa_log_mel(CLIP)  # (frames, mels): a real, non-polynomial signal
    ref = librosa.feature.delta(data.T, width=width, order=order, mode="interp").T
    ours = np.asarray(F.delta(jnp.asarray(data, jnp.float32), width, order))
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_delta_batched_and_too_short():
    data = jnp.asarray(np.random.default_rng(1).standard_normal((3, 20, 4)), jnp.float32)
    batched = F.delta(data)
    # Two shapes are two programs: the same 9 multiply-adds per element, but FMA contraction may
    # differ. Taps are k/60 (|k| <= 4) and |data| < 4, so the terms sum to at most 20/60 * 4 =
    # 1.33 in absolute value: at most 9 roundings of 2^-24 * 1.33 = 7e-7 < 1e-6.
    for i in range(3):
        np.testing.assert_allclose(batched[i], F.delta(data[i]), atol=1e-6)
    with pytest.raises(ValueError, match="width"):
        F.delta(data[:, :5])


def test_centroid_matches_librosa():
    ref = librosa.feature.spectral_centroid(y=CLIP.astype(np.float64), sr=SR, n_fft=CFG.n_fft,
                                            hop_length=CFG.hop_length, pad_mode="reflect")[0]
    ours = np.asarray(F.spectral_centroid_hz(jnp.asarray(CLIP), CFG))
    np.testing.assert_allclose(ours, ref, atol=0.1)
    # a pure tone's centroid sits at the tone
    tone = np.asarray(F.spectral_centroid_hz(jnp.asarray(sine(2000.0, CFG.duration_s)), CFG))
    assert np.all(np.abs(tone[2:-2] - 2000.0) < 20.0)


# --------------------------------------------------------------------- STFT


def test_stft_matmul_equals_fft():
    a = F.stft_power(jnp.asarray(CLIP), 512, 128, dft="fft")
    b = F.stft_power(jnp.asarray(CLIP), 512, 128, dft="matmul")
    np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-3 * float(jnp.max(a)))


def test_stft_matches_librosa_reflect():
    ref = np.abs(librosa.stft(CLIP.astype(np.float64), n_fft=512, hop_length=128,
                              pad_mode="reflect")) ** 2
    ours = np.asarray(F.stft_power(jnp.asarray(CLIP), 512, 128))
    np.testing.assert_allclose(ours, ref.T, atol=1e-3 * ref.max())


@pytest.mark.parametrize("num_samples,n_fft,hop", [(11025, 2048, 512), (11025, 256, 64),
                                                   (1000, 512, 100), (513, 1024, 256)])
def test_reflect_framing_reads_the_clip_as_the_padded_copy(num_samples, n_fft, hop):
    """Frames gathered straight from the clip (the reflect padding folded into the indices)
    are the frames of np.pad(mode="reflect"), bit for bit, at the edges as in the middle."""
    x = np.random.default_rng(num_samples).standard_normal((2, num_samples)).astype(np.float32)
    padded = np.pad(x, [(0, 0), (n_fft // 2, n_fft // 2)], mode="reflect")
    starts = np.arange(1 + num_samples // hop) * hop
    expected = np.stack([padded[:, s:s + n_fft] for s in starts], axis=1)
    np.testing.assert_array_equal(np.asarray(F.stft_frames(jnp.asarray(x), n_fft, hop, "reflect")),
                                  expected)


# --------------------------------------------------------------------- analyze


def test_analyze_shapes_and_finiteness():
    rng = np.random.default_rng(5)
    batch = jnp.asarray(np.stack([
        np.zeros(CFG.num_samples, np.float32),
        np.clip(rng.uniform(-1, 1, CFG.num_samples), -1, 1).astype(np.float32),  # full-scale noise
        np.ones(CFG.num_samples, np.float32),  # pure DC
        CLIP,
    ]))
    feats = jax.jit(F.analyze, static_argnums=1)(batch, CFG)
    chex.assert_shape(feats.log_mel, (4, CFG.num_frames, CFG.n_mels))
    chex.assert_shape(feats.mfcc, (4, CFG.num_frames, CFG.n_mfcc))
    chex.assert_shape(feats.centroid_hz, (4, CFG.num_frames))
    chex.assert_shape(feats.loudness_lufs, (4,))
    for mag, (n_fft, hop) in zip(feats.mrstft_mag, CFG.mrstft_resolutions):
        chex.assert_shape(mag, (4, 1 + CFG.num_samples // hop, n_fft // 2 + 1))
    for leaf in jax.tree.leaves(feats):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert float(feats.gain_db[0]) == CFG.max_gain_db  # silence: gain clipped, not infinite
    np.testing.assert_allclose(feats.log_mel[0], CFG.log_floor_db, atol=1e-4)
    assert float(feats.dc_offset[2]) == pytest.approx(1.0)
    np.testing.assert_allclose(feats.clip_fraction, [0.0, 0.01, 1.0, 0.0], atol=0.004)
    np.testing.assert_allclose(feats.peak[2:], [1.0, np.abs(CLIP).max()], rtol=1e-6)


def test_analyze_is_level_invariant_except_loudness():
    x = jnp.asarray(harmonic(330.0))
    a, b = F.analyze(x, CFG), F.analyze(0.05 * x, CFG)
    np.testing.assert_allclose(a.log_mel, b.log_mel, atol=0.02)
    np.testing.assert_allclose(a.centroid_hz, b.centroid_hz, rtol=1e-3)
    for ma, mb in zip(a.mrstft_mag, b.mrstft_mag):
        np.testing.assert_allclose(ma, mb, rtol=1e-3, atol=1e-3)
    assert float(a.loudness_lufs - b.loudness_lufs) == pytest.approx(-20 * np.log10(0.05), abs=0.01)
    assert float(a.loudness_lufs + a.gain_db) == pytest.approx(CFG.reference_lufs, abs=1e-3)


def test_analyze_shared_stft_equals_separate_functions():
    x = jnp.asarray(CLIP)
    feats = F.analyze(x, CFG)
    normalized = x * 10 ** (feats.gain_db / 20)
    np.testing.assert_allclose(feats.log_mel, F.log_mel(normalized, CFG), atol=1e-3)
    np.testing.assert_allclose(feats.centroid_hz, F.spectral_centroid_hz(normalized, CFG), rtol=1e-4)
    i = CFG.mrstft_resolutions.index((CFG.n_fft, CFG.hop_length))
    np.testing.assert_allclose(feats.mrstft_mag[i] ** 2,
                               F.stft_power(normalized, CFG.n_fft, CFG.hop_length),
                               rtol=1e-3, atol=1e-6)
    # mel power, frame energy and the K-weighted energy come from one product of the raw
    # spectrogram, the first two scaled by the gain afterwards: the same sums in another order
    # and the STFT of a scaled clip, i.e. float32 rounding over ~500 bins (rtol 1e-4)
    power = F.stft_power(normalized, CFG.n_fft, CFG.hop_length)
    np.testing.assert_allclose(feats.frame_energy, np.sum(power, axis=-1), rtol=1e-4)
    raw_power = F.stft_power(x, CFG.n_fft, CFG.hop_length)
    np.testing.assert_allclose(feats.loudness_lufs, F.loudness_from_power(
        raw_power, CFG.num_samples, CFG.sample_rate, CFG.n_fft, CFG.hop_length,
        CFG.loudness_floor_lufs), atol=1e-4)


def test_analyze_batch_invariance_and_vmap():
    rng = np.random.default_rng(7)
    batch = jnp.asarray(np.stack([CLIP, harmonic(110.0), 0.1 * rng.standard_normal(CFG.num_samples)
                                  .astype(np.float32)]))
    batched = F.analyze(batch, CFG)
    vmapped = jax.vmap(lambda a: F.analyze(a, CFG))(batch)
    single = F.analyze(batch[1], CFG)
    for leaf_b, leaf_v, leaf_s in zip(jax.tree.leaves(batched), jax.tree.leaves(vmapped),
                                      jax.tree.leaves(single)):
        np.testing.assert_allclose(leaf_b, leaf_v, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(leaf_b[1], leaf_s, rtol=1e-4, atol=1e-3)


def test_config_is_hashable_and_validated():
    assert hash(CFG) == hash(F.FeatureConfig())
    with pytest.raises(ValueError, match="n_mfcc"):
        F.FeatureConfig(n_mfcc=100)
    with pytest.raises(ValueError, match="too short"):
        F.FeatureConfig(duration_s=0.02)
    with pytest.raises(ValueError, match="samples"):
        F.analyze(jnp.zeros(100), CFG)


@pytest.mark.parametrize("name, fn", [
    ("analyze", lambda x: F.analyze(x, CFG)),
    ("stft_power", lambda x: F.stft_power(x, 512, 128)),
    ("stft_power", lambda x: F.log_mel(x, CFG)),
    ("stft_power", lambda x: F.spectral_centroid_hz(x, CFG)),
])
def test_eager_features_reject_non_finite_and_integer_audio(name, fn):
    # one NaN sample made every feature (and so every loss term) NaN, silently
    x = np.stack([CLIP, CLIP])
    x[1, 7] = np.inf
    with pytest.raises(ValueError, match=rf"{name}: audio has 1 NaN/Inf sample\(s\), first at index \(1, 7\)"):
        fn(x)
    with pytest.raises(TypeError, match=rf"{name}: audio must be floating point.*int16"):
        fn((CLIP * 32767).astype(np.int16))


def test_traced_features_stay_unchecked():
    x = jnp.asarray(CLIP).at[3].set(jnp.nan)
    assert np.isnan(np.asarray(jax.jit(lambda a: F.analyze(a, CFG).log_mel)(x))).any()


def test_chunked_analysis_equals_one_pass():
    # a batch larger than batch_chunk runs as a loop over chunks (the last padded with silence)
    rng = np.random.default_rng(11)
    clips = np.stack([CLIP, harmonic(110.0), harmonic(330.0), np.zeros_like(CLIP)]
                     + [0.1 * rng.standard_normal(CFG.num_samples).astype(np.float32)] * 2)
    one_pass = F.analyze(jnp.asarray(clips), dataclasses.replace(CFG, batch_chunk=None))
    chunked = F.analyze(jnp.asarray(clips), dataclasses.replace(CFG, batch_chunk=4))
    nested = F.analyze(jnp.asarray(clips).reshape(2, 3, -1), dataclasses.replace(CFG, batch_chunk=4))
    for a, b, c in zip(jax.tree.leaves(one_pass), jax.tree.leaves(chunked), jax.tree.leaves(nested)):
        assert b.shape == a.shape and c.shape == (2, 3) + a.shape[1:]
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(c.reshape(a.shape), a, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="batch_chunk"):
        dataclasses.replace(CFG, batch_chunk=0)


def test_analysis_with_loudness_from_the_stft_agrees_with_the_filtered_clip():
    # default k_weighting="stft" (the shared STFT gives the loudness) vs the time-domain filter
    clips = jnp.asarray(np.stack([CLIP, harmonic(110.0), 0.01 * harmonic(440.0)]))
    shared = F.analyze(clips, CFG)
    filtered = F.analyze(clips, dataclasses.replace(CFG, k_weighting="fir"))
    np.testing.assert_allclose(shared.loudness_lufs, filtered.loudness_lufs, atol=0.2)
    np.testing.assert_allclose(shared.gain_db, filtered.gain_db, atol=0.2)
    audible = np.asarray(filtered.log_mel) > CFG.log_floor_db + 10.0
    np.testing.assert_allclose(np.asarray(shared.log_mel)[audible], np.asarray(filtered.log_mel)[audible], atol=0.25)
    assert CFG.loudness_from_stft and dataclasses.replace(CFG, hop_length=128).loudness_from_stft
    assert not dataclasses.replace(CFG, hop_length=400).loudness_from_stft  # falls back to the filter
