"""Static settings of hybrid SAC (``SACConfig``) and of a training run (``TrainConfig``,
``RunOptions``); the CLI ``agents.sac_train`` builds its parser from ``TrainConfig``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from agents import curriculum as C
from agents import env as E
from agents.sac import checkpoint as ckpt
from agents.sac import replay
from jaxsynth.reward import RewardConfig


@dataclass(frozen=True)
class SACConfig:
    """Static SAC settings (hashable). Env steps count steps of *all* ``n_envs`` envs."""

    n_envs: int = 64
    n_evals: int = 4  # chunks; each ends with a held-out evaluation + curriculum check
    steps_per_eval: int = 4  # env steps per chunk
    updates_per_step: int = 8  # gradient updates after each env step
    batch_size: int = 256
    buffer_capacity: int = 65536  # transitions
    learning_starts: int = 1  # first env steps act uniformly at random (masked)
    gamma: float = 0.9
    tau: float = 0.01  # Polyak rate for the target critics
    lr_actor: float = 3e-4
    lr_critic: float = 3e-4
    lr_alpha: float = 3e-3
    init_alpha_c: float = 0.05
    init_alpha_d: float = 0.05
    autotune_alpha: bool = True
    target_entropy_c_per_dim: float = -1.0
    target_entropy_d_ratio: float = 0.5
    # Continuous-head entropy measured on the delta entries the chosen module edits (the rest
    # never reach the environment) when the adapter provides ``delta_mask``; see make_losses.
    entropy_c_per_module: bool = True
    hidden: tuple[int, ...] = (256, 256)
    encoder: str = "mlp"
    reward_scale: float = 1.0
    max_grad_norm: float = 10.0
    log_mel_dtype: str = "float16"
    shard_envs: bool = True  # shard the env axis over all local devices (jax.sharding)

    def __post_init__(self):
        checks = [
            (self.n_envs >= 1, "n_envs must be >= 1"),
            (self.n_evals >= 1, "n_evals must be >= 1"),
            (self.steps_per_eval >= 1, "steps_per_eval must be >= 1"),
            (self.updates_per_step >= 0, "updates_per_step must be >= 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.buffer_capacity >= self.n_envs,
             "buffer_capacity must hold at least one env step (>= n_envs)"),
            (0.0 <= self.gamma < 1.0, "gamma must be in [0, 1)"),
            (0.0 < self.tau <= 1.0, "tau must be in (0, 1]"),
            (self.encoder in ("mlp", "cnn"), "encoder must be 'mlp' or 'cnn'"),
            (self.log_mel_dtype in replay.LOG_MEL_DTYPES,
             f"log_mel_dtype must be one of {tuple(replay.LOG_MEL_DTYPES)}"),
            (self.init_alpha_c > 0 and self.init_alpha_d > 0, "initial temperatures must be > 0"),
            (len(self.hidden) >= 1, "hidden needs at least one layer"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"SACConfig: {msg}")

    @property
    def total_env_steps(self) -> int:
        return self.n_evals * self.steps_per_eval

    @property
    def total_transitions(self) -> int:
        return self.total_env_steps * self.n_envs



@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (the CLI fills it; tests build it directly)."""

    envs: int = 4096
    seeds: int = 1
    seed: int = 0
    total_steps: int = 8  # env steps of all envs
    chunk_steps: int = 2  # env steps per compiled chunk (= per held-out evaluation)
    updates_per_step: int = 16
    batch_size: int = 128
    stage: int = 0
    encoder: str = "mlp"
    hidden: tuple[int, ...] = (256, 256)
    duration_s: float = 0.15
    full_analysis: bool = False  # False: env.small_config analysis (32 mels, 3 MR-STFT sizes)
    max_steps: int = 4  # edits per episode
    bank_size: int = 32
    n_heldout: int = 32
    heldout_seed: int = 1234
    gamma: float = 0.9
    tau: float = 0.02
    lr: float = 1e-3
    learning_starts: int = 1
    buffer_capacity: int = 65536  # transitions (ring buffer: the oldest are overwritten)
    log_mel_dtype: str = "float16"
    init_alpha: float = 0.05
    lr_alpha: float = 3e-3
    target_entropy_c_per_dim: float = -1.0  # continuous head: H_c* = this * (entries edited; agents.sac.losses.make_losses)
    target_entropy_d_ratio: float = 0.5  # discrete head: H_d* = this * log(n_allowed modules)
    entropy_c_per_module: bool = True  # continuous entropy on the edited entries only (agents.sac.losses.make_losses)
    best_bonus: float = 0.5  # D3 episodic best-so-far bonus weight (RewardConfig.best_bonus_scale)
    # Largest edit of a continuous parameter per step (normalized units; env.default_max_delta
    # base). 0.1, not the env's 0.2: with 0.2 the greedy policy overshoots with its later edits
    # (final-episode loss above the start in 1 of 4 default runs); RESULTS.md "SAC training".
    max_delta: float = 0.1
    shard: bool = True
    cmaes_targets: int = 0  # D5 warm start: bank targets CMA-ES solves; its trajectories seed the buffer
    cmaes_budget: int = 64  # renders per target for that CMA-ES run
    bc_steps: int = 0  # D5: behaviour-cloning steps on those transitions before training

    def __post_init__(self):
        checks = [
            (self.envs >= 1, "--envs must be >= 1"),
            (self.seeds >= 1, "--seeds must be >= 1"),
            (self.chunk_steps >= 1, "--chunk-steps must be >= 1"),
            (self.total_steps >= self.chunk_steps and self.total_steps % self.chunk_steps == 0,
             f"--total-steps ({self.total_steps}) must be a positive multiple of --chunk-steps "
             f"({self.chunk_steps})"),
            (0 <= self.stage < C.N_STAGES, f"--stage must be in [0, {C.N_STAGES - 1}]"),
            (self.encoder in ("mlp", "cnn"), "--encoder must be 'mlp' or 'cnn'"),
            (self.duration_s >= 0.1, "--duration must be >= 0.1 s (longest MR-STFT window)"),
            (self.max_steps >= 1 and self.bank_size >= 1 and self.n_heldout >= 1,
             "--max-steps, --bank-size and --heldout must be >= 1"),
            (self.buffer_capacity >= 1, "--buffer-capacity must be >= 1"),
            (0.0 < self.max_delta <= 1.0, "--max-delta must be in (0, 1]"),
            (self.cmaes_targets >= 0 and self.bc_steps >= 0 and self.cmaes_budget >= 1,
             "--cmaes-targets, --bc-steps must be >= 0 and --cmaes-budget >= 1"),
            (not (self.bc_steps and not self.cmaes_targets),
             "--bc-steps needs teacher data: also pass --cmaes-targets N"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    @property
    def n_chunks(self) -> int:
        return self.total_steps // self.chunk_steps

    def env_config(self) -> E.EnvConfig:
        reward = RewardConfig(best_bonus_scale=self.best_bonus)
        if self.full_analysis:
            from jaxsynth.features import FeatureConfig
            from jaxsynth.synth import SynthConfig
            return E.EnvConfig(synth=SynthConfig(duration_s=self.duration_s),
                               features=FeatureConfig(duration_s=self.duration_s),
                               max_steps=self.max_steps, bank_size=self.bank_size, reward=reward)
        return E.small_config(self.duration_s, max_steps=self.max_steps, bank_size=self.bank_size,
                              build_chunk=min(32, self.bank_size), reward=reward)

    def max_delta01(self) -> np.ndarray:
        """(N_PARAMS,) per-parameter edit scale of a full delta (``env.default_max_delta``)."""
        return E.default_max_delta(self.max_delta)

    def sac_config(self) -> SACConfig:
        cap = self.buffer_capacity
        return SACConfig(
            n_envs=self.envs, n_evals=self.n_chunks, steps_per_eval=self.chunk_steps,
            updates_per_step=self.updates_per_step, batch_size=self.batch_size,
            buffer_capacity=max(cap, self.envs), learning_starts=self.learning_starts,
            gamma=self.gamma, tau=self.tau, lr_actor=self.lr, lr_critic=self.lr,
            init_alpha_c=self.init_alpha, init_alpha_d=self.init_alpha, lr_alpha=self.lr_alpha,
            target_entropy_c_per_dim=self.target_entropy_c_per_dim,
            target_entropy_d_ratio=self.target_entropy_d_ratio,
            entropy_c_per_module=self.entropy_c_per_module, hidden=self.hidden,
            encoder=self.encoder, log_mel_dtype=self.log_mel_dtype, shard_envs=self.shard)

    def fingerprint(self) -> dict:
        """Fields a resumed run must share with the checkpoint (total_steps may grow)."""
        d = dataclasses.asdict(self)
        d.pop("total_steps")
        return ckpt.fingerprint(d)


@dataclass(frozen=True)
class RunOptions:
    """Host-side options that do not change the numbers."""

    out: str = "runs/sac"
    resume: bool = False
    resume_from: int | None = None  # a checkpoint step older than the newest (implies resume)
    progress: bool = True
    checkpoint_every: int = 1  # chunks
    save_buffer: bool = True
    media_top_k: int = 3
    media: bool = True
    tensorboard: bool = True
    distributed: bool = False
