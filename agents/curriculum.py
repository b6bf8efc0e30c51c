"""Curriculum: stages that unlock synth modules gradually, per-stage held-out
validation presets, thresholds, and the advancement rule.

Unlock order, easiest first (each stage keeps everything unlocked before it; locked modules
hold ``jaxsynth.params.DEFAULT_PARAMS01``, so osc2, noise, unison, LFO and filter-envelope
are silent/inert until unlocked):

0. ``filter`` + ``amp_env``: the default oscillator (a saw at the played note) is fixed, so
   pitch is right from the start; only brightness/resonance/filter type and the loudness
   contour must be matched. 8 parameters, each with a large, monotone, easily heard effect.
1. ``+ osc1``: waveform, pulse width, coarse/fine tune and level. Coarse tune is a 49-way
   discrete jump with a very non-convex loss (octave and fifth aliases), so it comes after the
   agent can already shape the spectrum.
2. ``+ osc2, unison, noise``: mixing layers. They only matter once osc1 is right, and they
   interact (beating between detuned voices, noise masking harmonics).
3. ``+ filter_env, lfo, output``: time-varying modulation and the drive/gain stage. These
   change the sound over time and interact with every earlier module, so they come last.

Held-out sets are **disjoint from training draws by construction**, not just by probability:

* they come from a separate key stream (``heldout_presets(seed, ...)`` vs the bank's key), and
* the normalized ``filter.cutoff_hz`` coordinate (unlocked in every stage) is split into
  ``PARTITION_BINS`` interleaved bins: training presets only ever lie in even bins, held-out
  presets only in odd bins. Both marginals stay uniform at a resolution of 2 / PARTITION_BINS
  (0.2 % of the log-frequency range, ~20 cents of cutoff), so the held-out set is
  in-distribution while no held-out preset can ever equal a training preset.

Advancement: promote from stage ``s`` to ``s + 1`` when the median loss on stage ``s``'s
held-out presets is strictly below ``STAGES[s].threshold``; never past the last stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from jaxsynth import params as P


@dataclass(frozen=True)
class Stage:
    """One curriculum stage: the editable (unlocked) modules and the promotion threshold on
    the median held-out matching loss (``losses.matching_loss(...).total``)."""

    name: str
    modules: tuple[str, ...]
    threshold: float


# Thresholds on the median held-out matching loss (default LossWeights, 0.5 s, note 60).
# Calibrated with `python benchmarks/env_throughput.py --calibrate` (32 held-out presets per
# stage, seed 0): the median loss of the default start is 7.7 / 13.0 / 9.1 / 9.7 per stage;
# perturbing every unlocked parameter of the target by N(0, sigma) in normalized units gives
# medians of 0.6 / 2.0 / 1.3 / 1.9 at sigma = 0.02 and 2.0 / 3.4 / 2.1 / 2.7 at sigma = 0.05.
# A stage counts as learned when the policy's median match is as close as a typical 5 %-of-
# range perturbation of the target (about 75 % of the start loss removed). Starting points,
# to be tuned by pilot runs (benchmarks/RESULTS.md, "Curriculum stages 1 and 2"); the last one
# only reports "solved".
STAGES: tuple[Stage, ...] = (
    Stage("filter_amp", ("filter", "amp_env"), 2.0),
    Stage("osc1", ("filter", "amp_env", "osc1"), 3.4),
    Stage("layers", ("filter", "amp_env", "osc1", "osc2", "unison", "noise"), 2.1),
    Stage("full", ("filter", "amp_env", "osc1", "osc2", "unison", "noise",
                   "filter_env", "lfo", "output"), 2.7),
)
N_STAGES = len(STAGES)

PARTITION_PARAM = "filter.cutoff_hz"
PARTITION_BINS = 1024
_TRAIN, _HELDOUT = 0, 1  # parity of the partition bins
_HELDOUT_STREAM = 0x4E1D  # fold_in tag of the held-out key stream


def stage_module_masks() -> np.ndarray:
    """(n_stages, N_MODULES) bool: True where the stage may edit the module."""
    return np.stack([P.module_mask(s.modules) for s in STAGES])


def stage_thresholds() -> np.ndarray:
    """(n_stages,) float32 promotion thresholds."""
    return np.array([s.threshold for s in STAGES], np.float32)


def _check_stage(stage: int) -> int:
    if not (isinstance(stage, (int, np.integer)) and 0 <= int(stage) < N_STAGES):
        raise ValueError(f"stage must be an int in [0, {N_STAGES - 1}], got {stage!r}")
    return int(stage)


def partition_bin(params01: Float[Array, "... n_params"]) -> Int[Array, "..."]:
    """Index of the train/held-out partition bin of each preset (even: train, odd: held-out)."""
    u = jnp.asarray(params01)[..., P.INDEX[PARTITION_PARAM]]
    return jnp.clip(jnp.floor(u * PARTITION_BINS), 0, PARTITION_BINS - 1).astype(jnp.int32)


def _into_half(u: Float[Array, "..."], parity: int) -> Float[Array, "..."]:
    """Map u ~ U[0, 1) uniformly onto the bins of the given parity (even or odd).

    For the training parity the position inside a bin is kept below 1 - 2**-7: in float32,
    ``2 b + f`` with ``f`` within an ulp of 1 rounds up to ``2 b + 1``, an odd (held-out) bin
    (measured: u just below k / 512 lands in the held-out half for 510 of 511 bin edges).
    Held-out draws keep the plain formula, so the held-out sets stay what they were."""
    v = u * (PARTITION_BINS // 2)
    b = jnp.floor(v)
    f = v - b
    if parity == _TRAIN:
        f = jnp.minimum(f, 1.0 - 2.0 ** -7)
    return (2.0 * b + parity + f) / PARTITION_BINS


def _sample(key: Array, stage: int, n: int, parity: int) -> np.ndarray:
    mask = P.module_mask(STAGES[stage].modules)
    x = P.sample_params01(key, mask, shape=(n,))
    i = P.INDEX[PARTITION_PARAM]
    x = x.at[:, i].set(_into_half(x[:, i], parity))
    return np.asarray(x, np.float32)


def training_presets(key: Array, stage: int, n: int) -> np.ndarray:
    """(n, N_PARAMS) training targets of ``stage``: unlocked modules uniform in [0, 1]
    (discrete ones snapped), locked modules at their defaults, partition bin even."""
    return _sample(key, _check_stage(stage), n, _TRAIN)


def fresh_training_presets(key: Array, stage: Int[Array, ""], n: int) -> Float[Array, "n n_params"]:
    """(n, N_PARAMS) training targets of ``stage`` drawn inside jit (``stage`` may be traced):
    the distribution of ``training_presets`` (unlocked modules uniform, discrete ones snapped,
    locked modules at their defaults) in the even partition bins, so no draw can ever equal a
    held-out preset. The fresh-target stream of training draws a new set per episode."""
    masks = jnp.asarray(stage_module_masks())[jnp.clip(jnp.asarray(stage, jnp.int32), 0, N_STAGES - 1)]
    x = P.sample_params01(key, masks, shape=(n,))
    i = P.INDEX[PARTITION_PARAM]
    return x.at[:, i].set(_into_half(x[:, i], _TRAIN))


def heldout_presets(seed: int, stage: int, n: int) -> np.ndarray:
    """(n, N_PARAMS) held-out validation presets of ``stage``, fixed by ``seed``.

    Same distribution as ``training_presets`` but from a separate key stream and in the odd
    partition bins, so they never appear among training draws. Use a fixed ``n``: sets of
    different sizes from one seed are not promised to share a prefix.
    """
    if not isinstance(seed, (int, np.integer)):
        raise TypeError(f"heldout_presets: seed must be an int, got {type(seed).__name__}")
    if not (isinstance(n, (int, np.integer)) and n > 0):
        raise ValueError(f"heldout_presets: n must be a positive int, got {n!r}")
    stage = _check_stage(stage)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(int(seed)), _HELDOUT_STREAM), stage)
    return _sample(key, stage, int(n), _HELDOUT)


def is_heldout(params01) -> np.ndarray:
    """True for presets in the held-out half of the partition (odd bins)."""
    return np.asarray(partition_bin(params01) % 2 == _HELDOUT)


def advance(stage: Int[Array, ""], median_heldout_loss: Float[Array, ""],
            thresholds: Float[Array, "n_stages"]) -> Int[Array, ""]:
    """The promotion rule: ``stage + 1`` if ``median_heldout_loss < thresholds[stage]``
    (strictly) and a next stage exists, else ``stage``. jit-able; a NaN loss never promotes."""
    thresholds = jnp.asarray(thresholds, jnp.float32)
    stage = jnp.asarray(stage, jnp.int32)
    promote = (jnp.asarray(median_heldout_loss, jnp.float32) < thresholds[stage]) & (
        stage < thresholds.shape[0] - 1)
    return jnp.where(promote, stage + 1, stage).astype(jnp.int32)
