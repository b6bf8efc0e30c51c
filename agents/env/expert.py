"""The ground-truth teacher: for a synthetic target the true preset is known, so the best edit
from any state is known too.

``expert_action(params01, target01, stage, max_delta)`` is the edit an expert makes: the
unlocked module whose one clipped edit removes the most parameter error, and the delta that
moves that module's parameters straight toward the true preset (``clip(error / max_delta,
-1, 1)``; discrete parameters move by at least one choice step, as ``default_max_delta``
guarantees, and are snapped by the env). The error that counts (``parameter_error``) respects
what the sound cannot tell apart:

* **Two oscillators**: when both ``osc1`` and ``osc2`` are editable, the target with its two
  oscillator blocks (shape, pulse width, coarse, fine, level) swapped sounds the same (the
  oscillators are summed before the filter), so the error is that of the closer assignment.
  While ``osc2`` is locked, no swap is possible (its level holds the default 0).
* **Parameters silent in the target**: an oscillator's shape, pulse width and tuning when its
  level is 0; the pulse width when the morph has no square component (shape <= 2/3); the
  unison detune with one voice (the voices themselves are interchangeable, so only their
  count and detune are parameters); the LFO's shape and rate when all three LFO depths are
  0; the filter envelope when its amount is 0; key tracking at note 60 (the synth's
  reference note). Such a target value is arbitrary, so no error is counted and the expert
  never edits it. A parameter silent at the *current* setting but audible in the target
  (e.g. osc2's shape while the current osc2 level is 0) still counts: it is heard once the
  gating parameter reaches the target.

Used as labels for behaviour cloning on the states the learner visits (DAgger style,
``agents.sac.losses``); pure and jit/vmap-able (vmap over a batch of states).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from agents import curriculum as C
from jaxsynth import params as P

_OSC_FIELDS = ("shape", "pulse_width", "coarse_st", "fine_cents", "level")
_OSC1 = np.array([P.INDEX[f"osc1.{f}"] for f in _OSC_FIELDS])
_OSC2 = np.array([P.INDEX[f"osc2.{f}"] for f in _OSC_FIELDS])
_SWAP = np.arange(P.N_PARAMS)
_SWAP[_OSC1], _SWAP[_OSC2] = _OSC2, _OSC1
_STAGE_MASKS = C.stage_module_masks()
_I = P.INDEX
_REFERENCE_NOTE = 60.0  # jaxsynth.synth: key tracking is relative to this note


def audible(target01: Float[Array, "n_params"], note: float = 60.0) -> Bool[Array, "n_params"]:
    """True where the target's value of a parameter can be heard (module docstring)."""
    t = target01
    ok = jnp.ones((P.N_PARAMS,), bool)
    for osc in ("osc1", "osc2"):
        on = t[_I[f"{osc}.level"]] > 0.0
        for f in ("shape", "pulse_width", "coarse_st", "fine_cents"):
            ok = ok.at[_I[f"{osc}.{f}"]].set(on)
        ok = ok.at[_I[f"{osc}.pulse_width"]].set(on & (t[_I[f"{osc}.shape"]] > 2.0 / 3.0))
    ok = ok.at[_I["unison.detune_cents"]].set(P.choice_index(t, "unison.voices") > 0)
    lfo_on = (t[_I["lfo.to_pitch_st"]] > 0) | (t[_I["lfo.to_cutoff_oct"]] > 0) | (t[_I["lfo.to_amp"]] > 0)
    ok = ok.at[_I["lfo.shape"]].set(lfo_on).at[_I["lfo.rate_hz"]].set(lfo_on)
    fenv_on = t[_I["filter.env_amount_oct"]] != 0.5  # normalized 0.5 = 0 octaves
    for f in ("attack_s", "decay_s", "sustain", "release_s"):
        ok = ok.at[_I[f"filter_env.{f}"]].set(fenv_on)
    if note == _REFERENCE_NOTE:
        ok = ok.at[_I["filter.key_track"]].set(False)
    return ok


def _stage_params(stage: Int[Array, ""]) -> tuple[Bool[Array, "n_modules"], Bool[Array, "n_params"]]:
    modules = jnp.asarray(_STAGE_MASKS)[jnp.clip(jnp.asarray(stage, jnp.int32), 0, C.N_STAGES - 1)]
    return modules, P.param_mask(modules)


def signed_error(params01: Float[Array, "n_params"], target01: Float[Array, "n_params"],
                 stage: Int[Array, ""], note: float = 60.0) -> Float[Array, "n_params"]:
    """``target - current`` over the editable, audible parameters (0 elsewhere), for the
    oscillator assignment (as is, or swapped when both oscillators are editable) with the
    smaller L1 error."""
    modules, editable = _stage_params(stage)
    swapped = target01[_SWAP]

    def err(t):
        return jnp.where(editable & audible(t, note), t - params01, 0.0)

    e0, e1 = err(target01), err(swapped)
    both = modules[P.MODULES.index("osc1")] & modules[P.MODULES.index("osc2")]
    use_swap = both & (jnp.sum(jnp.abs(e1)) < jnp.sum(jnp.abs(e0)))
    return jnp.where(use_swap, e1, e0)


def parameter_error(params01: Float[Array, "n_params"], target01: Float[Array, "n_params"],
                    stage: Int[Array, ""], note: float = 60.0) -> Float[Array, ""]:
    """Symmetry-aware L1 parameter error (sum over editable, audible parameters)."""
    return jnp.sum(jnp.abs(signed_error(params01, target01, stage, note)))


def expert_action(params01: Float[Array, "n_params"], target01: Float[Array, "n_params"],
                  stage: Int[Array, ""], max_delta: Float[Array, "n_params"], note: float = 60.0
                  ) -> tuple[Int[Array, ""], Float[Array, "n_params"]]:
    """(module, delta in [-1, 1]^N_PARAMS): the teacher's edit (module docstring). The module
    maximises the error one clipped edit removes, ``sum_j min(|e_j|, max_delta_j)`` over its
    parameters; ties and a solved state pick the first allowed module. ``delta`` is 0 outside
    the chosen module."""
    modules, _ = _stage_params(stage)
    e = signed_error(params01, target01, stage, note)
    md = jnp.maximum(jnp.asarray(max_delta, jnp.float32), 1e-6)
    removable = jnp.minimum(jnp.abs(e), md)
    gain = jnp.asarray(P.MODULE_PARAMS, jnp.float32) @ removable  # (n_modules,)
    module = jnp.argmax(jnp.where(modules, gain, -1.0)).astype(jnp.int32)
    delta = jnp.where(jnp.asarray(P.MODULE_PARAMS)[module], jnp.clip(e / md, -1.0, 1.0), 0.0)
    return module, delta
