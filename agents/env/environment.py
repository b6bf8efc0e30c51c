"""The sound-matching environment, gymnax 1.0 style (pure, jit- and vmap-able).

An episode: ``reset`` draws a target of the current curriculum stage from the ``TargetBank``
(rendered and analysed once, so a reset renders nothing) and a start preset (the defaults, or
a random preset of the stage, ``EnvConfig.init``); each ``step`` applies one edit, renders the
edited preset, analyses it and pays the reward (``jaxsynth.reward``). At most ``max_steps``
edits per episode.

``step(key, state, action, params) -> (obs, state, reward, terminated, truncated, info)``:

* ``terminated``: success, ``loss < params.success_loss`` (default 0.0: disabled, because the
  loss is >= 0). The critic must not bootstrap through it.
* ``truncated``: the time limit, ``state.step == max_steps`` after the edit (the critic keeps
  bootstrapping through it; STYLE.md principle 14).
* Auto-reset with ``jax.lax.select`` when either is true. ``info`` carries what a replay buffer
  needs about the PRE-reset next state: ``next_params01``, ``next_log_mel``,
  ``target_index`` (the episode's target), plus ``reward_terms`` (``RewardTerms``),
  ``loss_terms`` (``LossTerms``), ``loss``, ``best_loss``, ``applied_delta``,
  ``action_lambda`` (effective) and ``edit_allowed`` (False for a masked/invalid module).
* ``key`` is used only by the auto-reset: rendering uses the bank's fixed ``render_key``
  (agents/target_bank.py explains why), so the reward is deterministic in (params, target).

Observation, ``Obs``: ``current_log_mel`` and ``target_log_mel`` (frames x n_mels, dB,
at the clip's own level: ``target_bank.level_log_mel``), ``delta_log_mel = current - target``,
``params01`` (all N_PARAMS, normalized) and ``module_mask`` (the stage's editable modules).
The delta features are the log-mel difference: it is exactly what the agent has to drive to
zero, and it spares an MLP from learning to subtract two 2,816-dim inputs; temporal deltas
(``features.delta``) and level/centroid summaries are fixed linear maps of it, which a first
layer can learn, so they are not added. Everything in the observation is recomputable from
(current log-mel, params01, target index) plus the bank: ``obs_from`` rebuilds it for a replay
buffer that never stores the target spectrogram. ``flatten_obs`` gives the MLP input with a
fixed affine dB scaling; default dim = 3 * 44 * 64 + 33 + 9 = 8,490 (``observation_size``).
The structured ``Obs`` is the CNN encoder's input; ``scale_obs`` applies the same dB scaling.

Action, ``Action(module, delta)`` (two heads): ``module`` indexes ``jaxsynth.params.MODULES``;
``delta`` in [-1, 1]^N_PARAMS is scaled per parameter by ``params.max_delta`` and applied to
the chosen module's parameters only, then clipped to [0, 1]. Discrete parameters:
``EnvConfig.discrete = "snap"`` snaps them after the edit (the state holds only valid
choices); their default ``max_delta`` is at least one choice step (``default_max_delta``), so a
full delta always reaches the neighbouring choice (a 3-way filter type with a 0.2 step would
otherwise be stuck forever). ``"latent"`` keeps the unsnapped value in the state (small deltas
accumulate; the synth snaps when rendering). Bad actions inside jit: NaN delta -> 0, +-Inf and
out-of-range deltas -> clipped to [-1, 1], a module index outside [0, N_MODULES) or a module
locked by the stage -> a no-op edit (the step still renders and the agent gets the step's
reward, with ``edit_allowed = False`` in info). Wrong shapes raise ``ActionError`` at trace
time; ``check_action`` is the strict host-side validator for CLIs.

Action penalty: ``-lambda_eff * ||applied_delta||^2`` on the edit actually applied (after
masking, clipping and snapping), with
``lambda_eff = action_lambda * lambda_stage_scale[stage] * ((1 - w) + w * progress)``,
``progress = clip(1 - best_loss / initial_loss, 0, 1)`` and ``w = lambda_progress_weight``.
With ``w = 0`` (default) lambda is constant per stage; with ``w = 1`` large edits are free at the
start of an episode (far from the target, where big moves are needed) and the full penalty
applies once the episode has closed the gap (fine tuning, where stability matters). All three
are EnvParams arrays, so a sweep of the penalty is a vmap, not a recompile.

Curriculum: ``params.stage`` is a traced int32; switching it (``curriculum.advance``) changes
target draws and the module mask without recompiling (tested with a trace counter).
``target_index`` is flat over stages (``stage * bank_size + i``), so an episode keeps its
target if the stage changes mid-episode.

Bank size and memory: one cached target takes 296 KB at the default analysis (MR-STFT
magnitudes dominate; ``target_bank.bytes_per_target``). ``bank_size = 128`` per stage is
4 x 128 x 296 KB = 145 MiB, comfortable on a 24 GB CPU host or any GPU, with 128 distinct
targets per stage (x 32 start presets with ``init="random"``). Raise it where memory is to spare.
The step's temporaries stay small (300 MB at 4,096 envs on a CPU, benchmarks/RESULTS.md): the
matching loss is computed inside the analysis' chunk loop (``rendering.env_render_loss``), so
the MR-STFT magnitudes of the envs' sounds and of their targets exist one chunk at a time.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxtyping import Array, Float, Int

from agents import curriculum as C
from agents.env.config import EnvConfig, default_max_delta
from agents.env.spaces import (
    _STAGE_MASKS,
    Action,
    Obs,
    _check_action_shapes,
    apply_action,
)
from agents.env.target_bank import (
    TargetBank,
    build_bank,
    level_log_mel,
    perceptual_config,
    perceptual_on,
)
from agents.rendering import env_render_features, env_render_loss
from jaxsynth import params as P
from jaxsynth.losses import matching_loss
from jaxsynth.perceptual import analyze as perceptual_analyze
from jaxsynth.reward import AudioStats, reward


@struct.dataclass
class EnvState:
    """Per-env state. ``loss`` is the matching loss of the current preset, ``best_loss`` the
    episode's best so far, ``initial_loss`` the loss at reset (for the adaptive lambda)."""

    params01: Float[Array, "n_params"]
    target_index: Int[Array, ""]
    current_log_mel: Float[Array, "frames n_mels"]
    loss: Float[Array, ""]
    best_loss: Float[Array, ""]
    initial_loss: Float[Array, ""]
    step: Int[Array, ""]


@struct.dataclass
class EnvParams:
    """Dynamic (vmappable, traced) environment parameters; changing any needs no recompile."""

    bank: TargetBank
    stage: Int[Array, ""]
    thresholds: Float[Array, "n_stages"]
    max_delta: Float[Array, "n_params"]
    action_lambda: Float[Array, ""]
    lambda_stage_scale: Float[Array, "n_stages"]
    lambda_progress_weight: Float[Array, ""]
    success_loss: Float[Array, ""]


def with_stage(params: EnvParams, stage) -> EnvParams:
    """``params`` at another curriculum stage (a traced int32: no recompilation)."""
    return params.replace(stage=jnp.asarray(stage, jnp.int32))


def effective_lambda(state: EnvState, params: EnvParams) -> Float[Array, ""]:
    """Adaptive action-penalty weight (see the module docstring)."""
    progress = jnp.clip(1.0 - state.best_loss / jnp.maximum(state.initial_loss, 1e-12), 0.0, 1.0)
    w = params.lambda_progress_weight
    stage = jnp.clip(params.stage, 0, C.N_STAGES - 1)
    return params.action_lambda * params.lambda_stage_scale[stage] * ((1.0 - w) + w * progress)


class SynthMatchEnv:
    """The sound-matching environment. Methods are pure functions of their arguments (the
    object only holds the static ``EnvConfig``); vmap over envs with
    ``jax.vmap(env.step, in_axes=(0, 0, 0, None))``."""

    def __init__(self, config: EnvConfig = EnvConfig()):
        if not isinstance(config, EnvConfig):
            raise TypeError(f"SynthMatchEnv takes an EnvConfig, got {type(config).__name__}")
        self.config = config

    # ------------------------------------------------------------------ spaces and params
    @property
    def num_modules(self) -> int:
        return P.N_MODULES

    @property
    def action_size(self) -> int:
        """Length of ``Action.delta``."""
        return P.N_PARAMS

    @property
    def num_stages(self) -> int:
        return C.N_STAGES

    @property
    def obs_shapes(self) -> dict[str, tuple[int, ...]]:
        mel = (self.config.num_frames, self.config.n_mels)
        return dict(current_log_mel=mel, target_log_mel=mel, delta_log_mel=mel,
                    params01=(P.N_PARAMS,), module_mask=(P.N_MODULES,))

    @property
    def observation_size(self) -> int:
        """Length of ``flatten_obs(obs)``."""
        return int(sum(np.prod(s) for s in self.obs_shapes.values()))

    @property
    def action_spec(self) -> dict[str, Any]:
        return dict(module=("categorical", P.N_MODULES), delta=("box", -1.0, 1.0, (P.N_PARAMS,)))

    def make_params(self, bank: TargetBank, stage: int = 0, *, max_delta=None,
                    action_lambda: float = 0.1, lambda_stage_scale=None,
                    lambda_progress_weight: float = 0.0, success_loss: float = 0.0,
                    thresholds=None) -> EnvParams:
        """EnvParams for a built bank (validated here, at the Python boundary)."""
        if not isinstance(bank, TargetBank):
            raise TypeError(f"make_params needs a TargetBank (agents.target_bank.build_bank), got "
                            f"{type(bank).__name__}")
        if bank.n_stages != C.N_STAGES or bank.log_mel.shape[2:] != (self.config.num_frames, self.config.n_mels):
            raise ValueError(f"bank shapes {bank.log_mel.shape} do not match this env "
                             f"({C.N_STAGES} stages, {self.config.num_frames} x {self.config.n_mels} "
                             "log-mel); build the bank with the same EnvConfig")
        if not (isinstance(stage, (int, np.integer)) and 0 <= stage < C.N_STAGES):
            raise ValueError(f"stage must be an int in [0, {C.N_STAGES - 1}], got {stage!r}")
        max_delta = default_max_delta() if max_delta is None else np.broadcast_to(
            np.asarray(max_delta, np.float32), (P.N_PARAMS,))
        scale = np.ones(C.N_STAGES, np.float32) if lambda_stage_scale is None else np.asarray(
            lambda_stage_scale, np.float32)
        thresholds = C.stage_thresholds() if thresholds is None else np.asarray(thresholds, np.float32)
        for name, arr, n in (("lambda_stage_scale", scale, C.N_STAGES), ("thresholds", thresholds, C.N_STAGES)):
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},) (one per stage), got {arr.shape}")
        for name, v in (("max_delta", max_delta), ("action_lambda", action_lambda),
                        ("lambda_stage_scale", scale), ("success_loss", success_loss)):
            if not np.all(np.isfinite(v)) or np.any(np.asarray(v) < 0):
                raise ValueError(f"{name} must be finite and >= 0, got {v!r}")
        if not 0.0 <= lambda_progress_weight <= 1.0:
            raise ValueError(f"lambda_progress_weight must be in [0, 1], got {lambda_progress_weight!r}")
        f32 = lambda v: jnp.asarray(v, jnp.float32)
        return EnvParams(bank=bank, stage=jnp.asarray(stage, jnp.int32), thresholds=f32(thresholds),
                         max_delta=f32(max_delta), action_lambda=f32(action_lambda),
                         lambda_stage_scale=f32(scale), lambda_progress_weight=f32(lambda_progress_weight),
                         success_loss=f32(success_loss))

    def default_params(self, key: Array | None = None, **kwargs) -> EnvParams:
        """Build a bank (renders every target once: seconds to minutes) and wrap it."""
        key = jax.random.key(0) if key is None else key
        return self.make_params(build_bank(key, self.config), **kwargs)

    # ------------------------------------------------------------------ observation
    def obs_from(self, current_log_mel: Float[Array, "frames n_mels"], params01: Float[Array, "n_params"],
                 target_index: Int[Array, ""], params: EnvParams, stage: Int[Array, ""] | None = None) -> Obs:
        """Rebuild an observation from what a replay buffer stores (vmap for a batch).

        ``target_index`` is the flat bank index (``state.target_index``/``info["target_index"]``:
        ``stage * bank_size + i``), so the target is right whatever the current stage. The module
        mask is that of ``stage`` (e.g. the stage stored with the transition), default
        ``params.stage``."""
        target_log_mel = params.bank.log_mel.reshape((-1,) + params.bank.log_mel.shape[2:])[target_index]
        stage = params.stage if stage is None else stage
        mask = jnp.asarray(_STAGE_MASKS)[jnp.clip(stage, 0, C.N_STAGES - 1)]
        return Obs(current_log_mel=current_log_mel, target_log_mel=target_log_mel,
                   delta_log_mel=current_log_mel - target_log_mel, params01=params01, module_mask=mask)

    def get_obs(self, state: EnvState, params: EnvParams) -> Obs:
        return self.obs_from(state.current_log_mel, state.params01, state.target_index, params)

    # ------------------------------------------------------------------ reset / step
    def reset(self, key: Array, params: EnvParams) -> tuple[Obs, EnvState]:
        """Draw a target of the current stage and a start preset (bank lookups only)."""
        bank = params.bank
        k_target, k_start = jax.random.split(key)
        i = jax.random.randint(k_target, (), 0, bank.bank_size)
        j = i if bank.paired else jax.random.randint(k_start, (), 0, bank.n_start)
        return self.reset_to(i, j, params)

    def reset_to(self, target: Int[Array, ""], start: Int[Array, ""], params: EnvParams
                 ) -> tuple[Obs, EnvState]:
        """Start an episode on target ``target`` and start preset ``start`` of the current stage
        (deterministic evaluation, e.g. over every target of a held-out bank). Indices are
        clipped into range inside jit. In a paired bank (``TargetBank.paired``: one start per
        target, e.g. a fresh bank whose starts come from a start function) pass
        ``start = target``."""
        bank = params.bank
        stage = jnp.clip(params.stage, 0, bank.n_stages - 1)
        i = jnp.clip(jnp.asarray(target, jnp.int32), 0, bank.bank_size - 1)
        j = jnp.clip(jnp.asarray(start, jnp.int32), 0, bank.n_start - 1)
        loss = bank.start_loss[stage, j, jnp.minimum(i, bank.start_loss.shape[2] - 1)]
        state = EnvState(params01=bank.start_params01[stage, j],
                         target_index=(stage * bank.bank_size + i).astype(jnp.int32),
                         current_log_mel=bank.start_log_mel[stage, j], loss=loss, best_loss=loss,
                         initial_loss=loss, step=jnp.zeros((), jnp.int32))
        return self.get_obs(state, params), state

    def step(self, key: Array, state: EnvState, action: Action, params: EnvParams):
        """Apply one edit, render, analyse, reward; auto-reset at the end of an episode."""
        _check_action_shapes(action)
        cfg, bank = self.config, params.bank
        new_params01, applied, allowed = apply_action(state.params01, action, params.stage,
                                                      params.max_delta, cfg.discrete)
        table = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), bank.features)  # flat targets
        if perceptual_on(cfg.loss_weights):  # CREPE terms: the target's are cached in the bank
            feats, audio = env_render_features(cfg.synth, cfg.features, cfg.note, cfg.velocity, True)(
                new_params01, bank.render_key)
            _, _, target_feats = bank.target(state.target_index)
            pcfg = perceptual_config(cfg)
            loss_terms = matching_loss(feats, target_feats, cfg.loss_weights,
                                       perceptual_analyze(audio, bank.crepe_weights, pcfg),
                                       bank.target_perceptual(state.target_index), pcfg)
        else:  # the loss inside the analysis' chunk loop, targets gathered per chunk
            feats, loss_terms = env_render_loss(cfg.synth, cfg.features, cfg.note, cfg.velocity,
                                                cfg.loss_weights)(
                new_params01, bank.render_key, table, state.target_index)
        target_stats = jax.tree.map(lambda x: x[state.target_index], AudioStats.from_features(table))
        lam = effective_lambda(state, params)
        terms = reward(loss_terms.total, state.loss, state.best_loss, AudioStats.from_features(feats),
                       target_stats, applied, lam, cfg.reward)
        loss = jnp.where(jnp.isfinite(loss_terms.total), loss_terms.total, state.loss)
        next_state = EnvState(params01=new_params01, target_index=state.target_index,
                              current_log_mel=level_log_mel(feats), loss=loss,
                              best_loss=jnp.minimum(state.best_loss, loss),
                              initial_loss=state.initial_loss, step=state.step + 1)
        terminated = loss < params.success_loss
        truncated = next_state.step >= cfg.max_steps
        done = terminated | truncated
        info = dict(next_params01=next_state.params01, next_log_mel=next_state.current_log_mel,
                    target_index=state.target_index, reward_terms=terms, loss_terms=loss_terms,
                    loss=loss, best_loss=next_state.best_loss, applied_delta=applied,
                    action_lambda=lam, edit_allowed=allowed)
        reset_obs, reset_state = self.reset(key, params)
        next_obs = self.get_obs(next_state, params)
        pick = lambda a, b: jax.lax.select(done, a, b)
        obs = jax.tree.map(pick, reset_obs, next_obs)
        state = jax.tree.map(pick, reset_state, next_state)
        return obs, state, terms.total, terminated, truncated, info
