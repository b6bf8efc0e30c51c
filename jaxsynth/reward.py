"""Per-step reward for sound matching: improvement of the matching loss, anti-cheat penalties,
the episodic best-so-far bonus, and an action penalty whose weight the environment may adapt.

    reward = improvement + best_bonus + silence + clipping + dc_offset + action

Every term is returned separately in ``RewardTerms`` (penalties as NEGATIVE numbers) and
``total`` is exactly their sum, so logs can attribute every bit of reward.

Terms and what each is for:

* ``improvement = improvement_scale * (loss_prev - loss_now)``: the agent is paid for progress
  on the matching loss (``losses.matching_loss(...).total``), not for the loss level, so
  every target is worth the same whatever its difficulty. Improvements telescope: over an
  episode they sum to ``loss_0 - loss_T``, so getting worse and then better again (cycling)
  earns nothing.
* ``best_bonus = best_bonus_scale * max(best_loss - loss_now, 0)``: an episodic bonus paid only
  when the episode's best-so-far loss is beaten. It also telescopes (it sums to
  ``best_0 - best_T``), so it cannot be farmed, but it rewards reaching new ground over
  oscillating around the current best. The caller updates ``best = min(best, loss_now)``.
* ``silence``: when the target is audible (louder than ``silence_lufs``) and the output is not,
  a penalty ramping from 0 at ``silence_lufs`` to ``-silence_weight`` at
  ``silence_lufs - silence_ramp_lu``. Silence is the classic cheat of spectral losses: the
  spectral convergence of silence is 1 whatever the target, and its log-magnitude error is
  bounded by the floors, so silence beats many audible-but-wrong sounds on MR-STFT (we measured
  MR-STFT 2.9 for silence vs 8.5 for loudness-matched noise against a harmonic tone). Spectral
  terms are computed after loudness normalisation, but the normalising gain is clipped at
  ``FeatureConfig.max_gain_db`` (+40 dB) so silence is not amplified into noise; the default
  ``silence_lufs = -60`` is ``reference_lufs - max_gain_db``: below it the spectral terms see
  an output that normalisation could not bring to the reference level, and are unreliable.
* ``clipping``: penalises the fraction of samples at/near full scale (``Features.clip_fraction``)
  in EXCESS of the target's, reaching ``-clip_weight`` at ``clip_fraction_full`` extra. Hard
  clipping is a cheap way to gain loudness and a bright, broadband spectrum; relative to the
  target so a clipped target can still be matched without penalty.
* ``dc_offset``: penalises |mean| in excess of the target's by more than ``dc_tolerance``,
  reaching ``-dc_weight`` at ``dc_full``. DC is inaudible and invisible to the loudness meter
  (the K-weighting high-pass removes it), and it eats headroom and clicks at note boundaries;
  the spectral terms only see it in the lowest bins.
* ``action = -action_lambda * ||delta||^2``: discourages large parameter edits.
  ``action_lambda`` is an argument (an array is fine), so the environment can adapt it.

* ``perceptual = perceptual_scale * (perceptual_prev - perceptual_now)`` (optional):
  improvement of a CREPE perceptual distance (e.g. ``perceptual.pitch_posterior_distance``),
  reported separately. ``perceptual_scale = 0`` (default): not computed, reported as 0, the
  total unchanged. (Alternatively, weight the CREPE terms inside the matching loss.)

Loudness gaming: changing the output level cannot lower any spectral term, because spectral
features are computed on loudness-normalised audio (``features.analyze``); level is scored by
``loudness_lu`` alone. We tried the cheats we could think of against a decaying harmonic
target (-16 LUFS), honest matches 10 / 50 cents sharp at total loss 0.61 / 1.14: a copy 20 dB
quieter (2.0: spectral terms exactly 0, loudness 20 LU), 60 dB quieter (8.3: gain clipped,
plus the silence penalty), silence (18.5), hard-clipped 18 dB hotter (10.4), copy + 0.3 DC
(4.1: loudness moves 0.04 LU, spectra catch it), copy + 15 Hz rumble (4.7: loudness moves
0.3 LU, spectra catch it), loudness-matched noise (16.4), a 9 ms full-scale burst before
the copy to inflate gated loudness (2.5). None beats an honest near-match, so no separate
loudness-gaming penalty is needed; the tests keep these cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxsynth.features import Features


@dataclass(frozen=True)
class RewardConfig:
    """Static reward settings (hashable)."""

    improvement_scale: float = 1.0
    best_bonus_scale: float = 0.5
    silence_lufs: float = -60.0
    silence_ramp_lu: float = 20.0
    silence_weight: float = 1.0
    clip_fraction_full: float = 0.01
    clip_weight: float = 1.0
    dc_tolerance: float = 0.01
    dc_full: float = 0.1
    dc_weight: float = 1.0
    perceptual_scale: float = 0.0

    def __post_init__(self):
        if self.silence_ramp_lu <= 0 or self.clip_fraction_full <= 0 or self.dc_full <= self.dc_tolerance:
            raise ValueError("RewardConfig: need silence_ramp_lu > 0, clip_fraction_full > 0 and "
                             f"dc_full > dc_tolerance (got {self})")


class AudioStats(NamedTuple):
    """Cheap per-clip statistics the anti-cheat penalties need (subset of ``Features``)."""

    loudness_lufs: Float[Array, "*batch"]
    dc_offset: Float[Array, "*batch"]
    clip_fraction: Float[Array, "*batch"]

    @classmethod
    def from_features(cls, features: Features) -> "AudioStats":
        return cls(features.loudness_lufs, features.dc_offset, features.clip_fraction)


class RewardTerms(NamedTuple):
    """Signed reward terms (penalties <= 0) and their sum ``total``."""

    improvement: Float[Array, "*batch"]
    best_bonus: Float[Array, "*batch"]
    silence: Float[Array, "*batch"]
    clipping: Float[Array, "*batch"]
    dc_offset: Float[Array, "*batch"]
    action: Float[Array, "*batch"]
    total: Float[Array, "*batch"]
    perceptual: Float[Array, "*batch"] = 0.0  # 0 when perceptual_scale is 0 (not computed)


def silence_penalty(current_lufs: Float[Array, "*batch"], target_lufs: Float[Array, "*batch"],
                    cfg: RewardConfig) -> Float[Array, "*batch"]:
    """-weight * ramp(how far below ``silence_lufs``), only when the target is audible."""
    target_audible = target_lufs > cfg.silence_lufs
    depth = jnp.clip((cfg.silence_lufs - current_lufs) / cfg.silence_ramp_lu, 0.0, 1.0)
    return -cfg.silence_weight * jnp.where(target_audible, depth, 0.0)


def clipping_penalty(current_fraction: Float[Array, "*batch"], target_fraction: Float[Array, "*batch"],
                     cfg: RewardConfig) -> Float[Array, "*batch"]:
    """-weight * min(1, excess clipped fraction / clip_fraction_full)."""
    excess = jnp.maximum(current_fraction - target_fraction, 0.0)
    return -cfg.clip_weight * jnp.minimum(excess / cfg.clip_fraction_full, 1.0)


def dc_penalty(current_dc: Float[Array, "*batch"], target_dc: Float[Array, "*batch"],
               cfg: RewardConfig) -> Float[Array, "*batch"]:
    """-weight * ramp of |DC| in excess of the target's, from ``dc_tolerance`` to ``dc_full``."""
    excess = jnp.abs(current_dc) - jnp.abs(target_dc) - cfg.dc_tolerance
    return -cfg.dc_weight * jnp.clip(excess / (cfg.dc_full - cfg.dc_tolerance), 0.0, 1.0)


def action_penalty(action_delta: Float[Array, "*batch n"], action_lambda) -> Float[Array, "*batch"]:
    """-lambda * ||delta||^2 over the last axis."""
    return -action_lambda * jnp.sum(jnp.square(action_delta), axis=-1)


def reward(loss_now: Float[Array, "*batch"], loss_prev: Float[Array, "*batch"],
           best_loss: Float[Array, "*batch"], current: AudioStats, target: AudioStats,
           action_delta: Float[Array, "*batch n"], action_lambda,
           cfg: RewardConfig = RewardConfig(), perceptual_now=None, perceptual_prev=None) -> RewardTerms:
    """Reward terms for one step; ``best_loss`` is the episode's best BEFORE this step.

    Non-finite losses (which the loss never produces, but an external loss might) are
    treated as no improvement rather than propagating NaN into the replay buffer.
    """
    finite = jnp.isfinite(loss_now)
    improvement = jnp.where(finite, cfg.improvement_scale * (loss_prev - loss_now), 0.0)
    bonus = jnp.where(finite, cfg.best_bonus_scale * jnp.maximum(best_loss - loss_now, 0.0), 0.0)
    terms = dict(
        improvement=improvement,
        best_bonus=bonus,
        silence=silence_penalty(current.loudness_lufs, target.loudness_lufs, cfg),
        clipping=clipping_penalty(current.clip_fraction, target.clip_fraction, cfg),
        dc_offset=dc_penalty(current.dc_offset, target.dc_offset, cfg),
        action=action_penalty(action_delta, action_lambda),
    )
    terms = jax.tree.map(lambda x: jnp.broadcast_to(x, jnp.shape(loss_now)).astype(jnp.float32), terms)
    total = sum(terms.values())
    perceptual = jnp.zeros(jnp.shape(loss_now), jnp.float32)
    if cfg.perceptual_scale != 0:
        if perceptual_now is None or perceptual_prev is None:
            raise ValueError("reward: perceptual_scale is non-zero; pass perceptual_now and "
                             "perceptual_prev (a CREPE distance) or set perceptual_scale=0")
        step = cfg.perceptual_scale * (perceptual_prev - perceptual_now)
        perceptual = jnp.broadcast_to(jnp.where(jnp.isfinite(step), step, 0.0), jnp.shape(loss_now)).astype(jnp.float32)
        total = total + perceptual
    return RewardTerms(**terms, total=total, perceptual=perceptual)
