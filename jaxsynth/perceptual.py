"""Perceptual matching terms from the CREPE pitch network (what they cost and what they add:
benchmarks/RESULTS.md, "perceptual embedding cost").

* ``crepe_embedding`` distance: per-frame relative L2 distance between CREPE block outputs
  (``embedding_layer``, default 5 = torchcrepe's ``embed``) of prediction and target,
  ``||e_pred - e_target|| / ||e_target||``, averaged over the frames in which the target is
  audible. Layer and pooling from a measured study (``benchmarks/perceptual_study.py``,
  benchmarks/RESULTS.md, the CREPE "layer x pooling study"): blocks 4-6 rank detunes best
  (Spearman with |cents| under a
  random timbre change 0.81-0.85; blocks 1-3 0.38-0.81), block 5 frame-wise highest or tied in
  three runs. Frame-wise and frame-averaged tie on static-pitch probes; a vibrato probe
  separates them: a wrong vibrato rate costs block 5 frame-wise 0.69 of a static 50-cent
  detune's distance (MR-STFT 0.61), frame-averaged only 0.14, since averaging over a note
  discards the pitch's time course (vibrato, glides). The embedding distance saturates past
  ~200 cents and an octave scores like ~100 cents, so pitch itself is the job of the next term.
* ``pitch_posterior_cents``: per frame, the 1-D Wasserstein-1 (earth mover's) distance in
  cents between the two clips' activations normalised to distributions over the 360 bins,
  ``20 * sum_k |CDF_pred(k) - CDF_target(k)|``, averaged over the frames in which the target is
  voiced. Unlike an L2 or cross-entropy between posteriors, it keeps growing (and keeps a
  gradient) when the two peaks do not overlap: an octave error costs ~1200, a semitone ~100.
* ``pitch_error_cents`` (metric): median over target-voiced frames of |pitch_pred -
  pitch_target| in cents, pitches decoded with ``crepe.log_parabolic_cents``; NaN when the
  target has no voiced frame (pitch undefined).

Voicing: a target frame is voiced when CREPE's confidence (max activation) is at least
``voicing_threshold`` and the frame is at most ``silence_db`` below the clip's loudest frame
(CREPE normalises every frame, so it finds "pitch" in near-silence). Target features do not
change during matching, so ``analyze`` them once and cache them (target bank).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxsynth import crepe as C


@dataclass(frozen=True)
class PerceptualConfig:
    """Static settings of the CREPE terms (hashable). ``hop_16k=400`` is 25 ms (21 frames / 0.5 s)."""

    model: str = "tiny"
    sample_rate: int = 22050
    hop_16k: int = 400
    embedding_layer: int = 5
    voicing_threshold: float = 0.5
    silence_db: float = -60.0

    def __post_init__(self):
        C.CrepeConfig(self.model, self.sample_rate, self.hop_16k)  # validates those three
        if not (isinstance(self.embedding_layer, int) and 1 <= self.embedding_layer <= C.NUM_LAYERS):
            raise ValueError(f"PerceptualConfig: embedding_layer must be in 1..{C.NUM_LAYERS}, "
                             f"got {self.embedding_layer!r}")
        if not 0.0 <= self.voicing_threshold < 1.0:
            raise ValueError(f"PerceptualConfig: voicing_threshold must be in [0, 1), got {self.voicing_threshold}")
        if self.silence_db >= 0:
            raise ValueError(f"PerceptualConfig: silence_db must be negative, got {self.silence_db}")

    @property
    def crepe(self) -> C.CrepeConfig:
        return C.CrepeConfig(self.model, self.sample_rate, self.hop_16k)


class PerceptualFeatures(NamedTuple):
    """CREPE outputs of one clip per frame (cache these for targets)."""

    embedding: Float[Array, "*batch frames dim"]
    activations: Float[Array, "*batch frames 360"]
    frame_db: Float[Array, "*batch frames"]  # RMS of the 16 kHz frame before normalisation, dB


def analyze(audio: Float[Array, "*batch samples"], weights: dict, cfg: PerceptualConfig = PerceptualConfig()
            ) -> PerceptualFeatures:
    """CREPE embedding, activations and frame levels (pure; jit with ``cfg`` static)."""
    frames = C.frames_16k(C.resample_to_16k(audio, cfg.sample_rate), cfg.hop_16k)
    frame_db = 10.0 * jnp.log10(jnp.mean(jnp.square(frames), axis=-1) + 1e-12)
    layers = C.crepe_layers(C.normalize_frames(frames), weights)
    activations = jax.nn.sigmoid(C.crepe_logits(layers[-1], weights))
    emb = layers[cfg.embedding_layer - 1]
    return PerceptualFeatures(emb.reshape(*emb.shape[:-2], -1), activations, frame_db)


def audible(target: PerceptualFeatures, cfg: PerceptualConfig) -> Float[Array, "*batch frames"]:
    """1.0 where the target frame is within ``silence_db`` of its loudest frame, else 0.0."""
    loudest = jnp.max(target.frame_db, axis=-1, keepdims=True)
    return (target.frame_db >= loudest + cfg.silence_db).astype(jnp.float32)


def voiced(target: PerceptualFeatures, cfg: PerceptualConfig) -> Float[Array, "*batch frames"]:
    """1.0 where the target frame is audible and CREPE is confident (see module docstring)."""
    confident = C.periodicity(target.activations) >= cfg.voicing_threshold
    return audible(target, cfg) * confident.astype(jnp.float32)


def _masked_mean(values, mask):
    total = jnp.sum(mask, axis=-1)
    return jnp.sum(values * mask, axis=-1) / jnp.where(total > 0, total, 1.0)


def embedding_distance(pred: PerceptualFeatures, target: PerceptualFeatures,
                       cfg: PerceptualConfig = PerceptualConfig()) -> Float[Array, "*batch"]:
    """Mean over audible target frames of ||e_pred - e_target|| / ||e_target|| (0 = identical)."""
    diff = jnp.sqrt(jnp.sum(jnp.square(pred.embedding - target.embedding), axis=-1) + 1e-12)
    ref = jnp.sqrt(jnp.sum(jnp.square(target.embedding), axis=-1) + 1e-12)
    return _masked_mean(diff / ref, audible(target, cfg))


def posterior_w1_cents(pred_act: Float[Array, "*batch 360"], target_act: Float[Array, "*batch 360"]
                       ) -> Float[Array, "*batch"]:
    """Wasserstein-1 distance in cents between activations normalised over the bins."""
    p = pred_act / jnp.maximum(jnp.sum(pred_act, axis=-1, keepdims=True), 1e-12)
    q = target_act / jnp.maximum(jnp.sum(target_act, axis=-1, keepdims=True), 1e-12)
    return C.CENTS_PER_BIN * jnp.sum(jnp.abs(jnp.cumsum(p - q, axis=-1)), axis=-1)


def pitch_posterior_distance(pred: PerceptualFeatures, target: PerceptualFeatures,
                             cfg: PerceptualConfig = PerceptualConfig()) -> Float[Array, "*batch"]:
    """Mean over target-voiced frames of the posterior W1 distance, in cents (0 if none voiced)."""
    return _masked_mean(posterior_w1_cents(pred.activations, target.activations), voiced(target, cfg))


def frame_pitch_error_cents(pred: PerceptualFeatures, target: PerceptualFeatures,
                            cfg: PerceptualConfig = PerceptualConfig()) -> Float[Array, "*batch"]:
    """Median over target-voiced frames of |decoded pitch difference| in cents; NaN if none voiced."""
    err = jnp.abs(C.log_parabolic_cents(pred.activations) - C.log_parabolic_cents(target.activations))
    return jnp.nanmedian(jnp.where(voiced(target, cfg) > 0, err, jnp.nan), axis=-1)


@functools.partial(jax.jit, static_argnames="cfg")
def _pitch_error_jit(pred_audio, target_audio, weights, cfg):
    return frame_pitch_error_cents(analyze(pred_audio, weights, cfg), analyze(target_audio, weights, cfg), cfg)


def pitch_error_cents(pred_audio, target_audio, sample_rate: int, model: str = "tiny", hop_16k: int = 160,
                      voicing_threshold: float = 0.5) -> np.ndarray:
    """Evaluation metric: median pitch error in cents over the target's voiced frames.

    ``pred_audio`` and ``target_audio``: (..., samples) at ``sample_rate``, broadcastable.
    Returns a NumPy array of the batch shape; NaN where the target has no voiced frame.
    Raises ``crepe.CrepeUnavailableError`` (naming the extra) if weights cannot be loaded.
    """
    pred = np.asarray(pred_audio, np.float32)
    target = np.asarray(target_audio, np.float32)
    if pred.shape[-1] != target.shape[-1]:
        raise ValueError(f"pred and target must have the same number of samples, got "
                         f"{pred.shape[-1]} and {target.shape[-1]}")
    if not (np.isfinite(pred).all() and np.isfinite(target).all()):
        raise ValueError("pitch_error_cents: audio contains NaN/Inf; fix the producer first")
    cfg = PerceptualConfig(model=model, sample_rate=int(sample_rate), hop_16k=hop_16k,
                           voicing_threshold=voicing_threshold)
    pred, target = np.broadcast_arrays(pred, target)
    return np.asarray(_pitch_error_jit(jnp.asarray(pred), jnp.asarray(target), C.load_weights(model), cfg))


def target_features(target_audio, cfg: PerceptualConfig = PerceptualConfig()) -> PerceptualFeatures:
    """Host helper for a target bank: CREPE features of (..., samples) targets, computed once."""
    return analyze_jit(jnp.asarray(target_audio, jnp.float32), C.load_weights(cfg.model), cfg)


@functools.partial(jax.jit, static_argnames="cfg")
def analyze_jit(audio, weights, cfg):
    """Jitted ``analyze`` with the weights as an argument (not baked in as constants): what
    ``target_features`` runs, for callers that hold the weights already."""
    return analyze(audio, weights, cfg)
