"""Action and observation spaces of the sound-matching environment.

Action: two heads, ``Action(module, delta)``: a module index into ``jaxsynth.params.MODULES``
and a delta in [-1, 1]^N_PARAMS applied to that module's parameters only (``apply_action``).
Observation: ``Obs`` (current, target and delta log-mels, normalized parameters, the stage's
module mask); ``flatten_obs`` is the flat MLP input, ``scale_obs`` the CNN input scaling.
The semantics of bad actions inside jit are described in ``agents.env.environment``.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxtyping import Array, Bool, Float, Int

from agents import curriculum as C
from agents.env.config import LOG_MEL_CENTER_DB, LOG_MEL_SCALE_DB
from jaxsynth import params as P

_STAGE_MASKS = C.stage_module_masks()


_MODULE_PARAMS = P.MODULE_PARAMS


class ActionError(ValueError):
    """An action with the wrong shape/dtype or invalid values, and how to fix it."""


@struct.dataclass
class Action:
    """Two-head action: module index (int32 scalar) and a delta (N_PARAMS,) in [-1, 1]."""

    module: Int[Array, ""]
    delta: Float[Array, "n_params"]


@struct.dataclass
class Obs:
    """Structured observation (current and target log-mels, their delta features, the
    normalized parameters); ``flatten_obs`` makes the flat MLP input."""

    current_log_mel: Float[Array, "frames n_mels"]
    target_log_mel: Float[Array, "frames n_mels"]
    delta_log_mel: Float[Array, "frames n_mels"]
    params01: Float[Array, "n_params"]
    module_mask: Bool[Array, "n_modules"]


def scale_obs(obs: Obs) -> Obs:
    """The fixed affine dB scaling used by ``flatten_obs`` (log-mels ``(dB + 40) / 40``,
    delta ``dB / 40``), for a CNN over the structured observation."""
    s = lambda x: (x - LOG_MEL_CENTER_DB) / LOG_MEL_SCALE_DB
    return obs.replace(current_log_mel=s(obs.current_log_mel), target_log_mel=s(obs.target_log_mel),
                       delta_log_mel=obs.delta_log_mel / LOG_MEL_SCALE_DB)


def flatten_obs(obs: Obs) -> Float[Array, "*batch obs_dim"]:
    """Flat float32 observation (any leading batch axes): scaled current, target and delta
    log-mels (frame-major), then params01, then the module mask as 0/1."""
    o = scale_obs(obs)
    batch = obs.params01.shape[:-1]
    parts = [o.current_log_mel, o.target_log_mel, o.delta_log_mel, o.params01,
             o.module_mask.astype(jnp.float32)]
    return jnp.concatenate([jnp.reshape(x, batch + (-1,)).astype(jnp.float32) for x in parts], axis=-1)


def check_action(action: Any, batch_shape: tuple[int, ...] = ()) -> Action:
    """Strict host-side validation of an action (for CLIs and other public entry points).

    Rejects wrong shapes, a non-integer module, NaN/Inf deltas, deltas outside [-1, 1] and
    module indices outside [0, N_MODULES) with an ``ActionError`` saying what to do. Inside
    jit the environment masks and clips instead (see the module docstring).
    """
    if not isinstance(action, Action):
        raise ActionError(f"expected an agents.env.Action(module, delta), got {type(action).__name__}")
    module, delta = np.asarray(action.module), np.asarray(action.delta)
    if module.shape != tuple(batch_shape):
        raise ActionError(f"Action.module must have shape {tuple(batch_shape)} (one module index per "
                          f"env), got {module.shape}")
    if delta.shape != tuple(batch_shape) + (P.N_PARAMS,):
        raise ActionError(f"Action.delta must have shape {tuple(batch_shape) + (P.N_PARAMS,)} (one "
                          f"entry per jaxsynth.params.NAMES), got {delta.shape}")
    if not np.issubdtype(module.dtype, np.integer):
        raise ActionError(f"Action.module must be an integer index into jaxsynth.params.MODULES, "
                          f"got dtype {module.dtype}")
    if np.any((module < 0) | (module >= P.N_MODULES)):
        raise ActionError(f"Action.module must be in [0, {P.N_MODULES - 1}] "
                          f"({list(P.MODULES)}), got {module.tolist()}")
    if not np.all(np.isfinite(delta)):
        raise ActionError("Action.delta contains NaN/Inf; replace them (np.nan_to_num) or fix the policy")
    if np.any(np.abs(delta) > 1.0):
        raise ActionError(f"Action.delta must lie in [-1, 1] (max |delta| {np.abs(delta).max():.3g}); "
                          "clip it (np.clip(delta, -1, 1))")
    return Action(module=jnp.asarray(module, jnp.int32), delta=jnp.asarray(delta, jnp.float32))


def _check_action_shapes(action: Action) -> None:
    """Trace-time (static) shape check inside step: shapes are known while tracing."""
    if not isinstance(action, Action):
        raise ActionError(f"step expects an agents.env.Action(module, delta), got {type(action).__name__}")
    if jnp.shape(action.module) != () or jnp.shape(action.delta) != (P.N_PARAMS,):
        raise ActionError(f"step takes one env's action: module shape () and delta shape "
                          f"({P.N_PARAMS},), got {jnp.shape(action.module)} and "
                          f"{jnp.shape(action.delta)}; vmap step over a batch of envs")


def apply_action(params01: Float[Array, "n_params"], action: Action, stage: Int[Array, ""],
                 max_delta: Float[Array, "n_params"], discrete: str = "snap"
                 ) -> tuple[Float[Array, "n_params"], Float[Array, "n_params"], Bool[Array, ""]]:
    """One edit: (new params01, applied delta = new - old, edit_allowed).

    Only the chosen module's parameters change, and only if the stage unlocks that module
    and the index is valid; locked parameters are returned bit-identical.
    """
    module = jnp.asarray(action.module).astype(jnp.int32)
    valid = (module >= 0) & (module < P.N_MODULES)
    safe = jnp.clip(module, 0, P.N_MODULES - 1)
    stage_mask = jnp.asarray(_STAGE_MASKS)[jnp.clip(stage, 0, C.N_STAGES - 1)]
    allowed = valid & stage_mask[safe]
    edit = jnp.asarray(_MODULE_PARAMS)[safe] & allowed
    delta = jnp.clip(jnp.where(jnp.isnan(action.delta), 0.0, action.delta), -1.0, 1.0)
    proposed = jnp.clip(params01 + jnp.where(edit, delta * max_delta, 0.0), 0.0, 1.0)
    if discrete == "snap":
        proposed = P.snap(proposed)
    new = jnp.where(edit, proposed, params01)
    return new, new - params01, allowed
