"""THE render -> analyse path of the agents, and THE render key.

Every sound the agents hear (environment targets, start presets and steps, matcher candidates,
policy observations, logged media) is rendered by ``jaxsynth.synth.render_batch`` (the env
step: ``synth.render_batch_map``, the same render chunk by chunk) with ONE fixed key per seed, ``render_key(seed)``, and analysed by ``jaxsynth.features.analyze``. With
the key fixed, the unison start phases and the noise are the same for equal parameters, so a
matching loss is a deterministic function of (params, target): a no-op edit earns exactly zero
improvement and a synth-rendered target's own preset has loss 0.

Four forms of the same path:
  * ``render_analyze``: pure and batched (``(B, N_PARAMS) -> (audio, Features)``), to be used
    inside a caller's jit (matchers, the trainer);
  * ``render_analyze_chunked``: host side, fixed-size jitted chunks (one compilation for any
    number of presets), NumPy out (target banks, media);
  * ``env_render_features``: one env's render whose ``vmap`` renders the whole batch at once
    (custom batching rule, below), for the gymnax-style env step that is written per env (with
    the CREPE terms on) and fresh targets;
  * ``env_render_loss``: the same, with the matching loss against a bank's cached target
    computed inside the render's and the analysis' chunk loops, so that only small per-env
    results leave them (the env step without CREPE terms, the default).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxsynth import params as P
from jaxsynth.features import FeatureConfig, Features, analyze, analyze_flat, map_in_chunks
from jaxsynth.losses import LossWeights, matching_loss, mrstft_norms
from jaxsynth.synth import SynthConfig, render_batch, render_batch_map

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



@functools.lru_cache(maxsize=None)
def env_render_loss(synth: SynthConfig, features: FeatureConfig, note: float, velocity: float,
                    weights: LossWeights):
    """``params01 (..., N_PARAMS), key, table, target_index -> (Features, LossTerms)``: the
    env's render, analysis and matching loss against target ``table[target_index]`` (``table``:
    target ``Features`` with one leading axis over targets, e.g. a bank's, flattened), whose
    ``vmap`` renders the whole batch at once like ``env_render_features``.

    The analysis and the loss run together in one loop over chunks of ``features.batch_chunk``
    clips (all at once if None), each chunk gathering its own targets from ``table``, inside
    the render's own loop over chunks (``synth.render_batch_map``: on a CPU each chunk of
    rendered clips is analysed while it is in the caches, and the batch's audio is never
    written out). The MR-STFT magnitudes of the rendered clips and of their targets (~90,000
    floats each per clip at the default analysis) exist one chunk at a time and are never
    materialised for the whole batch, which is what made a step of 4,096 envs cost twice as
    much per env as one of 1,024
    (benchmarks/RESULTS.md, "Environment step: the loss inside the analysis chunk loop"). The
    returned ``Features`` carry no MR-STFT magnitudes (``mrstft_mag == ()``); everything else
    is as ``analyze`` gives it. CREPE terms are not supported here (``weights`` must leave them
    at 0; the env uses ``env_render_features`` when they are on). Not differentiable."""
    if weights.crepe_embedding != 0 or weights.pitch_posterior_cents != 0:
        raise ValueError("env_render_loss computes no CREPE terms; use env_render_features and "
                         "perceptual.analyze when crepe_embedding or pitch_posterior_cents is on")

    def analyze_and_score(clips, targets, target_norms=None):
        feats = analyze_flat(clips, features)
        return feats._replace(mrstft_mag=()), matching_loss(feats, targets, weights,
                                                             target_mrstft_norms=target_norms)

    def batch(params01, keys, table, index, table_batched: bool):
        lead = params01.shape[:-1]
        flat = params01.reshape(-1, P.N_PARAMS)
        index = index.reshape(-1)
        if table_batched:  # one table per env (a vmap over banks): gather each env's target first
            targets = jax.tree.map(lambda t: t.reshape((-1,) + t.shape[len(lead):]), table)
            targets = jax.tree.map(lambda t: t[jnp.arange(index.shape[0]), index], targets)
            score = analyze_and_score
        else:
            targets = index  # gathered per chunk, inside the loop
            # the targets' spectral-convergence denominators, once per table row instead of
            # once per env (each costs a pass over the target's magnitudes)
            norms = mrstft_norms(table.mrstft_mag)
            score = lambda clips, i: analyze_and_score(
                clips, jax.tree.map(lambda t: t[i], table), tuple(n[i] for n in norms))
        chunk = features.batch_chunk

        def consume(audio, targets):  # one render chunk's clips, in analysis chunks
            if chunk is None or audio.shape[0] <= chunk:
                return score(audio, targets)
            return map_in_chunks(score, chunk, audio, targets)

        full = lambda v: jnp.full(flat.shape[:1], v, jnp.float32)
        out = render_batch_map(consume, flat, keys.reshape(-1), synth, full(note), full(velocity),
                               full(synth.default_note_length_s), (targets,))
        return jax.tree.map(lambda x: x.reshape(lead + x.shape[1:]), out)

    @jax.custom_batching.custom_vmap
    def render_loss(params01, key, table, index):
        lead = params01.shape[:-1]
        return batch(params01, jnp.broadcast_to(key, lead), table,
                     jnp.broadcast_to(index, lead), table_batched=False)

    @render_loss.def_vmap
    def _rule(axis_size, in_batched, params01, key, table, index):
        p_batched, k_batched, t_batched, i_batched = in_batched
        along = lambda v, b: v if b else jnp.broadcast_to(v, (axis_size,) + v.shape)
        params01 = along(params01, p_batched)
        lead = params01.shape[:-1]
        keys = jnp.broadcast_to(along(key, k_batched), lead)
        index = jnp.broadcast_to(along(index, i_batched), lead)
        table_batched = any(jax.tree.leaves(t_batched))
        if table_batched:  # every leaf to (*lead, targets, ...): one table per env
            table = jax.tree.map(lambda t, b: along(t, b), table, t_batched)
            table = jax.tree.map(lambda t: jnp.broadcast_to(
                t.reshape((axis_size,) + (1,) * (len(lead) - 1) + t.shape[1:]), lead + t.shape[1:]),
                table)
        out = batch(params01, keys, table, index, table_batched)
        return out, jax.tree.map(lambda _: True, out)

    return render_loss
