"""On-device replay buffer for SAC: a fixed-capacity ring buffer as a bundle of pure functions.

Why not flashbax: it is not installed here and pins its own JAX range; what SAC needs is a
uniform ring buffer over a pytree of fixed shapes, which is ~50 lines of ``jnp`` and keeps the
whole buffer a plain pytree that ``jit``/``vmap``/``jax.sharding`` and orbax handle directly
(the same ``init/add/sample`` bundle shape as flashbax's item buffer). Unlike Brax's buffer
there is no Python-side counter: the insert position and size are arrays in the state.

What a transition stores: the target is an **index into
the target bank** (plus its stage, since the bank is per stage), never its spectrogram; the
current log-mel is stored in a compact float dtype (float16 by default: log-mel values live in
[-80, +40] dB where float16's 11-bit mantissa gives < 0.02 dB rounding; bfloat16 gives ~0.25 dB).
The environment rebuilds the full observation with ``env.obs_from`` at sample time.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jaxsynth import params as P

LOG_MEL_DTYPES = {"float16": jnp.float16, "bfloat16": jnp.bfloat16, "float32": jnp.float32}


@flax.struct.dataclass
class SynthObsStore:
    """The parts of a synth-matching observation the buffer keeps (everything else is rebuilt).

    ``target_index`` is the env's flat bank index over all stages (``stage * bank_size + i``,
    see agents/env.py); ``stage`` fixes the module mask that was in force when the transition
    was collected.
    """

    log_mel: Float[Array, "*b frames n_mels"]  # current log-mel (dB), compact dtype
    params01: Float[Array, "*b n_params"]
    target_index: Int[Array, "*b"]
    stage: Int[Array, "*b"]


@flax.struct.dataclass
class Transition:
    """One (s, a, r, s') step. ``obs``/``next_obs`` are any pytree (``SynthObsStore`` for the
    synth env, a flat array for the probe envs). ``next_obs`` is the pre-reset observation.

    ``terminated`` stops bootstrapping (success); ``truncated`` (time limit) does not: the critic
    target bootstraps through truncation (gymnax 1.0, Pardo et al. 2018).
    """

    obs: Any
    module: Int[Array, "*b"]  # chosen module index into params.MODULES
    delta: Float[Array, "*b n_params"]  # pre-scaling action in [-1, 1]
    reward: Float[Array, "*b"]
    terminated: Bool[Array, "*b"]
    truncated: Bool[Array, "*b"]
    next_obs: Any


def synth_transition(log_mel, params01, target_index, stage, module, delta, reward, terminated,
                     truncated, next_log_mel, next_params01,
                     log_mel_dtype: str = "float16") -> Transition:
    """Build a batch of synth-env transitions in the buffer's layout (casts dtypes).

    Used by SAC's collection step and by ``agents.cmaes`` to turn CMA-ES trajectories into
    warm-start transitions for SAC. Shapes: leading batch axes ``*b`` shared by every argument.
    """
    dt = LOG_MEL_DTYPES[log_mel_dtype]
    target_index = jnp.asarray(target_index, jnp.int32)
    stage = jnp.broadcast_to(jnp.asarray(stage, jnp.int32), target_index.shape)
    obs = SynthObsStore(jnp.asarray(log_mel).astype(dt), jnp.asarray(params01, jnp.float32),
                        target_index, stage)
    nxt = SynthObsStore(jnp.asarray(next_log_mel).astype(dt), jnp.asarray(next_params01, jnp.float32),
                        target_index, stage)
    return Transition(obs=obs, module=jnp.asarray(module, jnp.int32),
                      delta=jnp.asarray(delta, jnp.float32), reward=jnp.asarray(reward, jnp.float32),
                      terminated=jnp.asarray(terminated, bool), truncated=jnp.asarray(truncated, bool),
                      next_obs=nxt)


@flax.struct.dataclass
class TargetRing:
    """Targets the buffer's transitions may point to when targets are drawn fresh per episode.

    Rows ``[0, n_fixed)`` hold the fixed training bank (flat index ``stage * bank_size + i``,
    so transitions collected on the bank, e.g. the CMA-ES warm start, keep their meaning);
    then ``n_slots`` slots of ``n_envs`` rows each, one slot per episode, overwritten in turn.
    With ``n_slots = ceil(capacity / (n_envs * episode_steps)) + 1`` a slot is overwritten only
    after every transition that points to it has left the ring buffer. Each target is stored
    once (its observation log-mel in the buffer's compact dtype and its params01 for the
    ground-truth teacher), not once per transition: at the small analysis (13 x 32 float16
    log-mel) 964 B per target, i.e. 241 B per transition with 4-edit episodes, against the
    2,086 B a transition takes."""

    log_mel: Float[Array, "rows frames n_mels"]
    params01: Float[Array, "rows n_params"]
    slot: Int[Array, ""]  # next slot to write

    @property
    def rows(self) -> int:
        return self.params01.shape[0]


def ring_slots(capacity: int, n_envs: int, episode_steps: int) -> int:
    """Slots a ``TargetRing`` needs so no live transition's target is overwritten."""
    return -(-capacity // (n_envs * episode_steps)) + 1


@flax.struct.dataclass
class BufferState:
    data: Any  # pytree with a leading (capacity,) axis on every leaf
    insert_pos: Int[Array, ""]
    size: Int[Array, ""]

    @property
    def capacity(self) -> int:
        return int(jax.tree_util.tree_leaves(self.data)[0].shape[0])


def init(example: Any, capacity: int) -> BufferState:
    """An empty buffer with room for ``capacity`` items shaped like ``example`` (unbatched)."""
    if capacity < 1:
        raise ValueError(f"replay capacity must be >= 1, got {capacity}")
    data = jax.tree.map(lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.asarray(x).dtype),
                        example)
    return BufferState(data, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def add(state: BufferState, batch: Any) -> BufferState:
    """Insert a batch (leading axis n, n <= capacity) at the ring position, overwriting oldest."""
    cap = state.capacity
    n = jax.tree_util.tree_leaves(batch)[0].shape[0]
    if n > cap:
        raise ValueError(f"batch of {n} items does not fit a replay buffer of capacity {cap}")
    idx = (state.insert_pos + jnp.arange(n)) % cap
    data = jax.tree.map(lambda buf, x: buf.at[idx].set(x.astype(buf.dtype)), state.data, batch)
    return BufferState(data, (state.insert_pos + n) % cap, jnp.minimum(state.size + n, cap))


def sample(state: BufferState, key: Array, batch_size: int) -> Any:
    """Uniform sample with replacement over the filled part (caller ensures size > 0)."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(state.size, 1))
    return jax.tree.map(lambda buf: buf[idx], state.data)


def bytes_per_item(example: Any) -> int:
    """Bytes one stored item takes (sum over leaves of the unbatched example)."""
    return int(sum(np.dtype(jnp.asarray(x).dtype).itemsize * int(np.prod(jnp.shape(x)))
                   for x in jax.tree_util.tree_leaves(example)))


def example_synth_transition(frames: int, n_mels: int, log_mel_dtype: str = "float16") -> Transition:
    """A zero transition of the synth layout (unbatched), for ``init`` and byte counts."""
    z = jnp.zeros
    return synth_transition(z((frames, n_mels)), z((P.N_PARAMS,)), z((), jnp.int32), z((), jnp.int32),
                            z((), jnp.int32), z((P.N_PARAMS,)), z(()), z((), bool), z((), bool),
                            z((frames, n_mels)), z((P.N_PARAMS,)), log_mel_dtype)
