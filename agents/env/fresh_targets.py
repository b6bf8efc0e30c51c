"""Fresh training targets, drawn and rendered inside the compiled training program.

A fixed bank of a few dozen training targets is memorised (the held-out loss stops falling
after a few episodes while the training loss keeps falling; benchmarks/RESULTS.md, "SAC
training"). ``fresh_bank`` draws ``n`` new presets of the current stage
(``curriculum.fresh_training_presets``: even partition bins, so never a held-out preset),
renders and analyses them with the env's render key, picks or computes one start preset per
target and the start's matching loss, and returns them as a one-stage, paired ``TargetBank``
(``TargetBank.paired``): target ``i`` starts from start ``i``. The trainer builds one per
episode, one target per env, so no target is ever seen twice (up to a collision of 33 random
floats).

The episode start is pluggable, ``start_fn(key, target_params01 (n, N), target_log_mel
(n, frames, mels), stage) -> start params01 (n, N)``, called inside jit (e.g. an amortized
network's first guess); ``None`` keeps the fixed bank's start presets (the defaults, or random
presets of the stage, ``EnvConfig.init``). Locked modules of a start always hold the defaults.

Cost per episode: ``n`` target renders + analyses, plus ``n`` start renders with a
``start_fn`` (``n_start`` with the bank's starts), plus ``n`` matching losses; the episode
itself renders ``n * max_steps``. Measured per env step in benchmarks/RESULTS.md ("SAC
training", fresh targets).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Int

from agents import curriculum as C
from agents.env.config import EnvConfig
from agents.env.target_bank import TargetBank, level_log_mel, perceptual_on
from agents.rendering import env_render_features
from jaxsynth import params as P
from jaxsynth.losses import matching_loss

StartFn = Callable[..., Array]


def stage_starts(starts: Array, stage: Int[Array, ""]) -> Array:
    """Start presets (..., N) made valid for ``stage``: clipped to [0, 1], snapped, and the
    modules the stage locks at their defaults (jit-able)."""
    editable = P.param_mask(jnp.asarray(C.stage_module_masks())[stage])
    return jnp.where(editable, P.snap(jnp.clip(starts, 0.0, 1.0)), jnp.asarray(P.DEFAULT_PARAMS01))


def fresh_bank(key: Array, stage: Int[Array, ""], n: int, config: EnvConfig, bank: TargetBank,
               start_fn: StartFn | None = None) -> TargetBank:
    """A paired one-stage bank of ``n`` fresh targets of ``stage`` (module docstring).

    ``bank`` supplies the render key and, without ``start_fn``, the start presets."""
    if perceptual_on(config.loss_weights):
        raise ValueError("fresh targets do not compute the CREPE terms; set both CREPE loss weights "
                         "to 0 or train on the fixed bank")
    k_target, k_start = jax.random.split(key)
    stage = jnp.clip(jnp.asarray(stage, jnp.int32), 0, C.N_STAGES - 1)
    render = jax.vmap(env_render_features(config.synth, config.features, config.note, config.velocity),
                      in_axes=(0, None))
    targets = C.fresh_training_presets(k_target, stage, n)
    t_feat = render(targets, bank.render_key)
    t_mel = level_log_mel(t_feat)
    if start_fn is None:
        s = jnp.clip(stage, 0, bank.n_stages - 1)
        j = jax.random.randint(k_start, (n,), 0, bank.n_start)
        all_feat = render(bank.start_params01[s], bank.render_key)  # n_start renders
        starts = bank.start_params01[s][j]
        s_feat = jax.tree.map(lambda x: x[j], all_feat)
        s_mel = level_log_mel(s_feat)
    else:
        starts = stage_starts(start_fn(k_start, targets, t_mel, stage), stage)
        s_feat = render(starts, bank.render_key)
        s_mel = level_log_mel(s_feat)
    loss = jax.vmap(lambda a, b: matching_loss(a, b, config.loss_weights).total)(s_feat, t_feat)
    one = lambda x: x[None]
    return TargetBank(params01=one(targets), log_mel=one(t_mel), features=jax.tree.map(one, t_feat),
                      start_params01=one(starts), start_log_mel=one(s_mel),
                      start_loss=loss[None, :, None], render_key=bank.render_key)
