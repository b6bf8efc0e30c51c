"""THE render -> analyse path of the agents, and THE render key.

Every sound the agents hear (environment targets, start presets and steps, matcher candidates,
policy observations, logged media) is rendered by ``jaxsynth.synth.render_batch`` with ONE
fixed key per seed, ``render_key(seed)``, and analysed by ``jaxsynth.features.analyze``. With
the key fixed, the unison start phases and the noise are the same for equal parameters, so a
matching loss is a deterministic function of (params, target): a no-op edit earns exactly zero
improvement and a synth-rendered target's own preset has loss 0.

Three forms of the same path:
  * ``render_analyze``: pure and batched (``(B, N_PARAMS) -> (audio, Features)``), to be used
    inside a caller's jit (matchers, the trainer);
  * ``render_analyze_chunked``: host side, fixed-size jitted chunks (one compilation for any
    number of presets), NumPy out (target banks, media);
  * ``env_render_features``: one env's render whose ``vmap`` renders the whole batch at once
    (custom batching rule, below), for the gymnax-style env step that is written per env.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxsynth import params as P
from jaxsynth.features import FeatureConfig, Features, analyze
from jaxsynth.synth import SynthConfig, render_batch

RENDER_STREAM = 3  # fold_in tag of the render key's stream (targets and starts use others)


def render_key(seed: int | Array) -> Array:
    """The fixed render key of ``seed`` (an int, or a PRNG key whose render stream is taken)."""
    key = jax.random.key(seed) if isinstance(seed, (int, np.integer)) else seed
    return jax.random.fold_in(key, RENDER_STREAM)


def render_analyze(params01: Float[Array, "B n_params"], key: Array, synth: SynthConfig,
                   features: FeatureConfig, note: float, velocity: float
                   ) -> tuple[Float[Array, "B samples"], Features]:
    """Render a flat batch with one key (broadcast over the batch) and analyse it."""
    keys = jnp.broadcast_to(key, params01.shape[:1])
    audio = render_batch(params01, keys, synth, note=note, velocity=velocity)
    return audio, analyze(audio, features)


render_analyze_jit = jax.jit(render_analyze, static_argnames=("synth", "features", "note", "velocity"))


def render_analyze_chunked(params01: np.ndarray, key: Array, synth: SynthConfig,
                           features: FeatureConfig, note: float, velocity: float, chunk: int
                           ) -> tuple[np.ndarray, Features]:
    """``render_analyze`` of ``n`` presets in fixed-size jitted chunks (the last one padded), so
    any ``n`` costs one compilation: (audio (n, samples), Features with leading axis n), NumPy."""
    x = P.validate_params01(params01)
    n = x.shape[0]
    pad = (-n) % chunk
    x = np.concatenate([x, np.repeat(x[-1:], pad, 0)]) if pad else x
    outs = [jax.device_get(render_analyze_jit(jnp.asarray(x[i:i + chunk]), key, synth, features,
                                              note, velocity))
            for i in range(0, x.shape[0], chunk)]
    return jax.tree.map(lambda *leaves: np.concatenate(leaves)[:n], *outs)


@functools.lru_cache(maxsize=None)
def env_render_features(synth: SynthConfig, features: FeatureConfig, note: float, velocity: float,
                        return_audio: bool = False):
    """``params01 (..., N_PARAMS), key -> Features`` whose ``vmap`` renders the whole batch with
    the synth's batch-native ``render_batch`` (``jax.custom_batching.custom_vmap``).

    The env step is written for one env (gymnax style) and vmapped over envs; plain ``vmap`` of a
    single-sound render puts the env axis first inside the synth's time-major scans, which
    measured 2.4x slower than ``render_batch`` on the same 64 sounds (CPU, jax 0.10.2), and the
    whole env step 1.7x slower (benchmarks/RESULTS.md, "Environment throughput"). The custom rule
    flattens any number of vmapped axes (vmap over seeds of vmap over envs works) into one batch.
    Not differentiable (the env needs no gradients; use ``jaxsynth.synth.render`` for
    ``jax.grad``). ``return_audio``: return ``(Features, audio)`` (for the CREPE terms)."""

    def batch(params01, keys):
        lead = params01.shape[:-1]
        flat = params01.reshape(-1, P.N_PARAMS)
        audio = render_batch(flat, keys.reshape(-1), synth, note=note, velocity=velocity)
        feats = (analyze(audio, features), audio) if return_audio else analyze(audio, features)
        return jax.tree.map(lambda x: x.reshape(lead + x.shape[1:]), feats)

    @jax.custom_batching.custom_vmap
    def render_features(params01, key):
        return batch(params01, jnp.broadcast_to(key, params01.shape[:-1]))

    @render_features.def_vmap
    def _rule(axis_size, in_batched, params01, key):
        p_batched, k_batched = in_batched
        if not p_batched:
            params01 = jnp.broadcast_to(params01, (axis_size,) + params01.shape)
        keys = key if k_batched else jnp.broadcast_to(key, (axis_size,) + key.shape)
        keys = jnp.broadcast_to(keys, params01.shape[:-1])
        out = batch(params01, keys)
        return out, jax.tree.map(lambda _: True, out)

    return render_features

