"""Matching losses between two clips' ``Features``: the weighted blend of MR-STFT, MFCC L1,
spectral-centroid and loudness differences that the matchers minimise and the reward improves.

``matching_loss(pred, target, weights)`` takes PRECOMPUTED features (``features.analyze``),
so a target's features are computed once and cached (the environment's target bank) and only
the prediction is analysed per step. All spectral features come from loudness-normalised audio
(``analyze`` scales each clip to ``reference_lufs`` with a clipped gain), so no spectral term
can be lowered by changing the output level: level is scored only by the loudness term.

Terms (each per clip, batch dimensions preserved):

* ``spectral_convergence`` and ``log_magnitude``: the multi-resolution STFT loss of Yamamoto
  et al. 2020 (Parallel WaveGAN), computed like ``auraloss.freq.MultiResolutionSTFTLoss`` with
  ``w_sc=1, w_log_mag=1, w_lin_mag=0``, periodic Hann windows of the FFT size, hop = size/4:
  ``sc = ||Y| - |X||_F / ||Y||_F``, ``log_mag = mean |log|Y| - log|X||`` with
  ``|.| = sqrt(max(power, 1e-8))``, each averaged over resolutions; ``mrstft = sc + log_mag``.
  (auraloss pools the Frobenius norms over the batch; here each clip has its own ratio, which
  is the same for a batch of one.)
* ``mfcc_l1``: mean |MFCC_pred - MFCC_target| over frames and coefficients (dB units).
* ``log_mel_l1``: mean |log-mel difference| in dB; reported for evaluation, weight 0 by default
  because the blend is MR-STFT, MFCC, centroid and loudness.
* ``centroid_oct``: per-frame |log2(c_pred / c_target)|, averaged with weights proportional to
  the two clips' summed frame energy. Octaves, not Hz or Hz/Nyquist: brightness is perceived
  on a log-frequency axis, so a 100 Hz error at a 200 Hz centroid (0.58 oct) should cost more
  than at 5 kHz (0.03 oct), and the unit does not depend on the sample rate. Energy weights
  ignore frames where both clips are silent (where the centroid is meaningless).
* ``loudness_lu``: |L_pred - L_target| in LU (BS.1770-4 integrated loudness, features.py).

* ``crepe_embedding`` and ``pitch_posterior_cents`` (optional): CREPE perceptual terms from
  ``perceptual.py``; weight 0 by default, and then they are not computed and are reported as 0
  (every other term and the total unchanged). With a non-zero weight, pass
  ``PerceptualFeatures`` of both clips to ``matching_loss``.

``total = sum(weight_i * term_i)`` over the ``LossWeights`` fields. Default weights were set
from the medians over 16 pairs of random full-synth presets (0.5 s, note 60): MR-STFT 4.5,
MFCC L1 20 dB, centroid 2.0 oct, loudness 10.5 LU; with weights 1, 0.1, 1, 0.1 the four
terms contribute 4.5 / 2 / 2 / 1, so none dominates and 10 LU (a clearly audible level
error) costs about as much as detuning a harmonic tone by 50 cents (MR-STFT ~0.76 + MFCC ~0.36).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxsynth.features import FeatureConfig, Features, analyze
from jaxsynth.loudness import check_audio

_TINY = 1e-20


@dataclass(frozen=True)
class LossWeights:
    """Weights of the matching loss (hashable; static under jit)."""

    mrstft: float = 1.0
    mfcc_l1: float = 0.1
    log_mel_l1: float = 0.0
    centroid_oct: float = 1.0
    loudness_lu: float = 0.1
    crepe_embedding: float = 0.0
    pitch_posterior_cents: float = 0.0


_PERCEPTUAL_TERMS = ("crepe_embedding", "pitch_posterior_cents")


class LossTerms(NamedTuple):
    """Every term of the matching loss, unweighted, plus the weighted ``total``.

    ``mrstft == spectral_convergence + log_magnitude``. The CREPE terms are always present:
    0 when their weight is 0 (then they are not computed), so every caller sees one type.
    """

    spectral_convergence: Float[Array, "*batch"]
    log_magnitude: Float[Array, "*batch"]
    mrstft: Float[Array, "*batch"]
    mfcc_l1: Float[Array, "*batch"]
    log_mel_l1: Float[Array, "*batch"]
    centroid_oct: Float[Array, "*batch"]
    loudness_lu: Float[Array, "*batch"]
    crepe_embedding: Float[Array, "*batch"]
    pitch_posterior_cents: Float[Array, "*batch"]
    total: Float[Array, "*batch"]


def _safe_norm(x: Float[Array, "*batch f b"]) -> Float[Array, "*batch"]:
    """Frobenius norm over the last two axes with a finite gradient at 0."""
    return jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=(-2, -1)), _TINY))


def mrstft_norms(mags: tuple[Float[Array, "*batch f b"], ...]) -> tuple[Float[Array, "*batch"], ...]:
    """||target||_F of each MR-STFT magnitude: the denominators of the spectral convergence, a
    property of the target alone. A caller that scores many predictions against a few cached
    targets (the environment's bank) computes them once per target and passes them as
    ``target_norms``/``target_mrstft_norms``, so that each score reads every target magnitude
    once less."""
    return tuple(_safe_norm(m) for m in mags)


def spectral_convergence(pred_mag: Float[Array, "*batch f b"],
                         target_mag: Float[Array, "*batch f b"],
                         target_norm: Float[Array, "*batch"] | None = None) -> Float[Array, "*batch"]:
    """||target - pred||_F / ||target||_F (Arik et al. 2018; auraloss SpectralConvergenceLoss);
    ``target_norm``: ||target||_F when it is cached (``mrstft_norms``)."""
    norm = _safe_norm(target_mag) if target_norm is None else target_norm
    return _safe_norm(target_mag - pred_mag) / norm


def log_magnitude_l1(pred_mag: Float[Array, "*batch f b"],
                     target_mag: Float[Array, "*batch f b"]) -> Float[Array, "*batch"]:
    """mean |log target - log pred| (auraloss STFTMagnitudeLoss(log=True, distance="L1")).

    Magnitudes must already be floored (``features.magnitude``), so the log is finite. One
    log of the ratio per bin instead of two logs: the env step evaluates it on ~90,000 bins per
    env and step (measured 64 -> 44 CPU ms at 1,024 clips).
    """
    return jnp.mean(jnp.abs(jnp.log(target_mag / pred_mag)), axis=(-2, -1))


def multi_resolution_stft(pred_mags: tuple[Float[Array, "*batch f b"], ...],
                          target_mags: tuple[Float[Array, "*batch f b"], ...],
                          target_norms: tuple[Float[Array, "*batch"], ...] | None = None
                          ) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"]]:
    """(spectral convergence, log-magnitude L1), each averaged over resolutions.

    Their sum is ``auraloss.freq.MultiResolutionSTFTLoss(w_sc=1, w_log_mag=1)`` (Yamamoto et
    al. 2020, eq. 4-6) for one clip. ``target_norms``: ``mrstft_norms(target_mags)`` if cached.
    """
    norms = (None,) * len(target_mags) if target_norms is None else target_norms
    sc = sum(spectral_convergence(p, t, n) for p, t, n in zip(pred_mags, target_mags, norms))
    lm = sum(log_magnitude_l1(p, t) for p, t in zip(pred_mags, target_mags))
    return sc / len(pred_mags), lm / len(pred_mags)


def mean_l1(pred: Float[Array, "*batch f d"], target: Float[Array, "*batch f d"]) -> Float[Array, "*batch"]:
    """Mean absolute difference over the last two axes (frames, features)."""
    return jnp.mean(jnp.abs(pred - target), axis=(-2, -1))


def centroid_delta_octaves(pred_hz: Float[Array, "*batch frames"], target_hz: Float[Array, "*batch frames"],
                           pred_energy: Float[Array, "*batch frames"],
                           target_energy: Float[Array, "*batch frames"],
                           min_hz: float = 20.0) -> Float[Array, "*batch"]:
    """Energy-weighted mean over frames of |log2(pred_hz / target_hz)| (centroids >= min_hz)."""
    octaves = jnp.abs(jnp.log2(jnp.maximum(pred_hz, min_hz)) - jnp.log2(jnp.maximum(target_hz, min_hz)))
    weight = pred_energy + target_energy
    total = jnp.sum(weight, axis=-1)
    safe_total = jnp.where(total > 0, total, 1.0)  # both silent: 0, with a finite gradient
    return jnp.sum(octaves * weight, axis=-1) / safe_total


def loudness_delta_lu(pred_lufs: Float[Array, "*batch"], target_lufs: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
    """|L_pred - L_target| in loudness units (LU)."""
    return jnp.abs(pred_lufs - target_lufs)


def matching_loss(pred: Features, target: Features, weights: LossWeights = LossWeights(),
                  pred_perceptual=None, target_perceptual=None, perceptual_cfg=None,
                  target_mrstft_norms: tuple[Float[Array, "*batch"], ...] | None = None
                  ) -> LossTerms:
    """The matching loss between precomputed features; every term and the weighted total.

    The CREPE terms need ``pred_perceptual``/``target_perceptual`` (``perceptual.analyze``)
    when their weight is non-zero; ``perceptual_cfg`` defaults to ``PerceptualConfig()``.
    ``target_mrstft_norms``: ``mrstft_norms(target.mrstft_mag)`` when the caller caches them
    (the same loss, up to float32 rounding of the sums).
    """
    sc, lm = multi_resolution_stft(pred.mrstft_mag, target.mrstft_mag, target_mrstft_norms)
    terms = dict(
        spectral_convergence=sc,
        log_magnitude=lm,
        mrstft=sc + lm,
        mfcc_l1=mean_l1(pred.mfcc, target.mfcc),
        log_mel_l1=mean_l1(pred.log_mel, target.log_mel),
        centroid_oct=centroid_delta_octaves(pred.centroid_hz, target.centroid_hz,
                                            pred.frame_energy, target.frame_energy),
        loudness_lu=loudness_delta_lu(pred.loudness_lufs, target.loudness_lufs),
    )
    total = sum(getattr(weights, f.name) * terms[f.name] for f in fields(weights)
                if f.name not in _PERCEPTUAL_TERMS)
    zero = jnp.zeros_like(terms["mrstft"])
    perceptual = {name: zero for name in _PERCEPTUAL_TERMS}
    if all(getattr(weights, name) == 0 for name in _PERCEPTUAL_TERMS):
        return LossTerms(**terms, **perceptual, total=total)
    if pred_perceptual is None or target_perceptual is None:
        raise ValueError("matching_loss: a CREPE term has non-zero weight but pred_perceptual/"
                         "target_perceptual were not given; pass perceptual.analyze(...) of both "
                         "clips or set crepe_embedding = pitch_posterior_cents = 0")
    from jaxsynth import perceptual as P  # noqa: PLC0415  (only when the terms are on)
    pcfg = P.PerceptualConfig() if perceptual_cfg is None else perceptual_cfg
    compute = {"crepe_embedding": P.embedding_distance, "pitch_posterior_cents": P.pitch_posterior_distance}
    for name in _PERCEPTUAL_TERMS:
        if getattr(weights, name) != 0:
            perceptual[name] = compute[name](pred_perceptual, target_perceptual, pcfg)
            total = total + getattr(weights, name) * perceptual[name]
    return LossTerms(**terms, **perceptual, total=total)


def matching_loss_audio(pred_audio: Float[Array, "*batch samples"],
                        target_audio: Float[Array, "*batch samples"],
                        cfg: FeatureConfig = FeatureConfig(),
                        weights: LossWeights = LossWeights(),
                        perceptual_cfg=None, crepe_weights=None) -> LossTerms:
    """Convenience: analyse both clips, then ``matching_loss`` (for ``jax.grad`` experiments).

    With a CREPE term on, ``crepe_weights`` (``crepe.load_weights(model)``) must be given.
    Called with concrete audio it rejects NaN/Inf samples and integer PCM with a clear error
    (one NaN sample would make every term NaN); traced audio is not checked.
    """
    pred_audio = check_audio(pred_audio, "matching_loss_audio (pred_audio)")
    target_audio = check_audio(target_audio, "matching_loss_audio (target_audio)")
    pred_p = target_p = None
    if any(getattr(weights, name) != 0 for name in _PERCEPTUAL_TERMS):
        from jaxsynth import perceptual as P  # noqa: PLC0415
        perceptual_cfg = P.PerceptualConfig(sample_rate=cfg.sample_rate) if perceptual_cfg is None else perceptual_cfg
        if crepe_weights is None:
            raise ValueError("matching_loss_audio: CREPE terms are on; pass "
                             "crepe_weights=crepe.load_weights(perceptual_cfg.model)")
        pred_p = P.analyze(pred_audio, crepe_weights, perceptual_cfg)
        target_p = P.analyze(target_audio, crepe_weights, perceptual_cfg)
    return matching_loss(analyze(pred_audio, cfg), analyze(target_audio, cfg), weights,
                         pred_p, target_p, perceptual_cfg)
