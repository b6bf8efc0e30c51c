"""A trained SAC policy as a sound matcher: load a ``python -m agents.sac_train`` run directory
and drive ``agents.evaluation.registry.policy_matcher`` with its actor.

Loading (``load_policy(run_dir)``): the newest checkpoint in ``run_dir/checkpoints`` is read with
orbax; the run's ``TrainConfig`` is rebuilt from the checkpoint metadata (``metadata["config"]``
is ``TrainConfig.fingerprint()``: every field but ``total_steps``) and checked against it; only
the actor parameters of one seed (``seed_index``, default 0 of a ``--seeds N`` run) are restored
(an orbax partial restore: the replay buffer and critics are not read). No ``Setup`` and no
target bank is built: the observation needs only the env's render/analysis settings and the
bank's render key, which is a pure function of the run's seed (``agents.rendering.render_key``).

Observation: exactly the training env's (``agents.env.Obs`` through
``synth_adapter.net_input``), computed with THAT run's env config (e.g. 0.15 s clips, a 32-mel
analysis, loudness-levelled log-mels ``agents.env.level_log_mel``), never with the harness's
features: the current preset is rendered with the env's synth config and the bank's render key;
the target log-mel is the env analysis of the target rendered the same way when the target's
preset is known (held-out sets), else of the first ``env duration`` seconds of the target audio
(WAV files; a distribution shift: training targets end with the note's release, a cropped WAV
need not).

Budget: the harness charges ONE render per policy step, the harness render of the proposed
preset whose loss picks the best-so-far (the same render every other matcher is charged for).
The policy's own observation render of that preset at the env's short clip (0.15 s: 0.3x the
samples of the 0.5 s harness render) is not charged separately, and neither is the one env
render of each target's known preset (the analogue of the target render every matcher gets for
free). Say so when comparing wall-clock time.

Start: a run trained with ``--amortized`` starts every episode from the amortized network's
guess of the target (its copy in ``RUN/amortized``, ``LoadedPolicy.amortized``); the matcher
then starts there too (``agents.evaluation.registry``), and the guess's render is the first of
the budget.

Actions: ``mode="greedy"`` (argmax module, tanh(mean) delta, the training evaluation policy) or
``"sample"`` (the stochastic policy), applied with ``agents.env.apply_action`` semantics (only the
chosen module changes, scaled by the env's ``max_delta``, clipped, snapped); a module the mask
locks is never edited (masked logits give it probability 0, and the edit is also masked).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jaxtyping import Array, Float

from agents import curriculum as C
from agents import env as E
from agents.rendering import render_analyze_jit, render_key
from agents.sac import checkpoint as ckpt
from agents.sac import networks as nets
from agents.sac import trainer as sac
from agents.sac.amortized import RUN_COPY, AmortizedLoadError, LoadedAmortized, load_amortized
from agents.sac.config import TrainConfig
from agents.sac.synth_adapter import net_input
from jaxsynth import params as P
from jaxsynth.features import analyze

MODES = ("greedy", "sample")
TRAIN_HINT = ("train one with `PYTHONPATH=. python -m agents.sac_train --out RUN_DIR` and pass "
              "that RUN_DIR")


class PolicyLoadError(ckpt.CheckpointError):
    """A run directory that cannot give a policy (missing, no checkpoint, corrupt, other config)."""


@dataclass(frozen=True, eq=False)
class LoadedPolicy:
    """The actor of one seed of a trained run, with the env settings it was trained on."""

    run_dir: str
    config: TrainConfig
    env_config: E.EnvConfig
    actor: nets.Actor
    actor_params: Any
    max_delta: np.ndarray  # (N_PARAMS,) the env's edit scale
    render_key: Array  # the training bank's render key
    chunk: int  # chunks trained when the checkpoint was written
    seed_index: int
    amortized: LoadedAmortized | None = None  # the network episodes start from (run with --amortized)


def _config_from_metadata(meta: dict, where: Path) -> TrainConfig:
    saved = meta.get("config")
    if not isinstance(saved, dict):
        raise PolicyLoadError(f"checkpoint in {where} has no training config in its metadata; it was "
                              f"not written by agents.sac_train: {TRAIN_HINT}")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(saved) - set(fields))
    missing = sorted(set(fields) - set(saved) - {"total_steps"})
    if unknown or missing:
        raise PolicyLoadError(f"checkpoint in {where} was written by another version of agents.sac_train "
                              f"(config fields unknown here: {unknown}, missing: {missing}); retrain with "
                              f"this code: {TRAIN_HINT}")
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
    kw["total_steps"] = kw["chunk_steps"] * max(1, int(meta.get("chunk", 1)))
    try:
        cfg = TrainConfig(**kw)
    except (TypeError, ValueError) as e:
        raise PolicyLoadError(f"checkpoint in {where} holds an invalid training config ({e}); "
                              f"{TRAIN_HINT}") from e
    if cfg.fingerprint() != saved:
        raise PolicyLoadError(f"checkpoint in {where}: the rebuilt config does not reproduce the saved "
                              f"one (this code reads it differently); {TRAIN_HINT}")
    return cfg


def _abstract_actor(actor: nets.Actor, env_cfg: E.EnvConfig, seeds: int):
    """Shapes/dtypes of the actor parameters of a ``seeds``-seed run (leading seeds axis)."""
    obs = nets.NetObs(jnp.zeros((P.N_PARAMS + P.N_MODULES,), jnp.float32),
                      jnp.zeros((env_cfg.num_frames, env_cfg.n_mels, 3), jnp.float32))
    mask = jnp.ones((P.N_MODULES,), bool)
    one = jax.eval_shape(actor.init, jax.random.PRNGKey(0), obs, mask)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct((seeds,) + s.shape, s.dtype), one)


def load_policy(run_dir: str | os.PathLike, seed_index: int = 0) -> LoadedPolicy:
    """Load the actor of seed ``seed_index`` from the newest checkpoint of a training run."""
    run = Path(run_dir)
    if not run.is_dir():
        raise PolicyLoadError(f"policy run directory {str(run)!r} does not exist; {TRAIN_HINT}")
    ckpt_dir = (run / "checkpoints").absolute()
    try:
        step = ckpt.latest_step(ckpt_dir)
    except ckpt.CheckpointError as e:
        raise PolicyLoadError(str(e)) from e
    if step is None:
        raise PolicyLoadError(f"{ckpt_dir} holds no checkpoint (is {str(run)!r} the --out of a finished "
                              f"agents.sac_train run?); {TRAIN_HINT}")
    try:
        ckpt.verify_files(ckpt_dir, step)  # damaged files: one clear line before orbax reads them
        meta = ckpt.read_metadata(ckpt_dir, step)
    except ckpt.CheckpointError as e:
        raise PolicyLoadError(str(e)) from e
    if meta.get("format") != ckpt.FORMAT:
        raise PolicyLoadError(f"checkpoint in {ckpt_dir} has format {meta.get('format')!r}, this code "
                              f"reads format {ckpt.FORMAT}; {TRAIN_HINT}")
    cfg = _config_from_metadata(meta, ckpt_dir)
    if not 0 <= seed_index < cfg.seeds:
        raise PolicyLoadError(f"seed_index {seed_index} out of range: the run trained {cfg.seeds} seed(s)")
    env_cfg = cfg.env_config()
    actor = nets.Actor(P.N_MODULES, P.N_PARAMS, cfg.encoder, cfg.hidden)
    abstract = {"sac": {"actor": _abstract_actor(actor, env_cfg, cfg.seeds)}}
    try:
        with ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(create=False)) as m:
            out = m.restore(step, args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(abstract, partial_restore=True)))
        params = out["state"]["sac"]["actor"]
    except Exception as e:  # noqa: BLE001 -- any unreadable checkpoint is a load error
        raise PolicyLoadError(f"checkpoint {step} in {ckpt_dir}: the actor could not be restored "
                              f"({type(e).__name__}: {str(e)[:300]}); it is corrupt or from other code: "
                              f"{TRAIN_HINT}") from e
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(abstract["sac"]["actor"])):
        if np.shape(got) != want.shape or not np.all(np.isfinite(np.asarray(got))):
            raise PolicyLoadError(f"checkpoint {step} in {ckpt_dir}: actor array of shape {np.shape(got)} "
                                  f"where {want.shape} (finite) was expected; {TRAIN_HINT}")
    params = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)[seed_index]), params)
    amortized = None
    if cfg.amortized:  # trained from the amortized guess: the run's own copy of the network
        try:
            amortized = load_amortized(run / RUN_COPY)
        except AmortizedLoadError as e:
            raise PolicyLoadError(f"{run} was trained from an amortized network's guess but its copy "
                                  f"{run / RUN_COPY} is unusable ({e})") from e
    return LoadedPolicy(str(run), cfg, env_cfg, actor, params, cfg.max_delta01(), render_key(cfg.seed),
                        int(meta.get("chunk", step)), int(seed_index), amortized)


# ----------------------------------------------------------------------------- observation and action


def env_log_mel(audio: Float[Array, "T samples"], pol: LoadedPolicy) -> Float[Array, "T frames n_mels"]:
    """Env observation log-mel of audio: its first ``env duration`` seconds, analysed with the
    env's feature config, at the clip's own level (``level_log_mel``)."""
    n = pol.env_config.synth.num_samples
    audio = jnp.asarray(audio, jnp.float32)
    if audio.shape[-1] < n:
        raise ValueError(f"target audio has {audio.shape[-1]} samples; the policy's env needs at "
                         f"least {n} ({pol.env_config.synth.duration_s} s)")
    return _analyze_env(audio[..., :n], pol.env_config)


@partial(jax.jit, static_argnames="env_cfg")
def _analyze_env(audio, env_cfg):
    return E.level_log_mel(analyze(audio, env_cfg.features))


def env_log_mel_of_params(params01: Float[Array, "T n_params"], pol: LoadedPolicy):
    """Env observation log-mel of presets rendered exactly as in training (env synth config,
    the bank's render key)."""
    cfg = pol.env_config
    _, feats = render_analyze_jit(jnp.asarray(P.validate_params01(params01), jnp.float32), pol.render_key,
                                  cfg.synth, cfg.features, cfg.note, cfg.velocity)
    return E.level_log_mel(feats)


@partial(jax.jit, static_argnames=("actor", "sample", "discrete"))
def _act(actor_params, key, params01, current_mel, target_mel, mask, max_delta, actor, sample, discrete):
    t = params01.shape[0]
    mask_b = jnp.broadcast_to(mask, (t, P.N_MODULES))
    obs = E.Obs(current_log_mel=current_mel, target_log_mel=target_mel,
                delta_log_mel=current_mel - target_mel, params01=params01, module_mask=mask_b)
    net_obs, m = net_input(obs)
    if sample:
        module, delta = sac.sample_actions(actor, actor_params, key, net_obs, m, jnp.bool_(False))
    else:
        module, delta = sac.greedy_policy(actor, actor_params)(net_obs, m)
    last = jnp.int32(C.N_STAGES - 1)  # every module unlocked; the mask is applied below
    apply = jax.vmap(lambda p, mo, d: E.apply_action(p, E.Action(mo, d), last, max_delta, discrete)[0])
    new = apply(params01, module, delta)
    allowed = mask_b[jnp.arange(t), module]
    return jnp.where(allowed[:, None], new, params01), module, delta


def actions(pol: LoadedPolicy, key, params01, current_mel, target_mel, module_mask, mode: str = "greedy"):
    """(next params01 (T, N), module (T,), delta (T, N)) of the policy on env observations."""
    if mode not in MODES:
        raise ValueError(f"policy mode must be one of {MODES}, got {mode!r}")
    mask = jnp.asarray(np.asarray(module_mask, bool))
    return _act(pol.actor_params, key, jnp.asarray(params01, jnp.float32), current_mel, target_mel,
                mask, jnp.asarray(pol.max_delta), pol.actor, mode == "sample", pol.env_config.discrete)


class SACPolicy:
    """The harness protocol of ``agents.evaluation.registry.policy_matcher`` for a loaded policy."""

    def __init__(self, pol: LoadedPolicy, mode: str = "greedy"):
        if mode not in MODES:
            raise ValueError(f"policy mode must be one of {MODES}, got {mode!r}")
        self.pol, self.mode = pol, mode

    @property
    def episode_steps(self) -> int:
        return self.pol.env_config.max_steps

    def prepare(self, target_audio, target_params01=None):
        """Target observation log-mel: the env render of the known preset, else the audio's."""
        if target_params01 is not None:
            return env_log_mel_of_params(target_params01, self.pol)
        return env_log_mel(target_audio, self.pol)

    def propose(self, key, params01, target_ctx, module_mask, sample: bool = False):
        current = env_log_mel_of_params(params01, self.pol)
        mode = "sample" if (sample or self.mode == "sample") else "greedy"
        return actions(self.pol, key, params01, current, target_ctx, module_mask, mode)[0]
