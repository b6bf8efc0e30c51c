"""Static settings of hybrid SAC (``SACConfig``) and of a training run (``TrainConfig``,
``RunOptions``); the CLI ``agents.sac_train`` builds its parser from ``TrainConfig``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from agents import curriculum as C
from agents import env as E
from agents.sac import checkpoint as ckpt
from agents.sac import replay
from jaxsynth.reward import RewardConfig


def cli(help: str, *, flag: str | None = None, **argparse_kw) -> dict:
    """Field metadata from which ``agents.sac_train`` builds its parser: the help text, the flag
    when it is not ``--field-name`` (for a switch that defaults to True: the flag that turns it
    off), and other ``argparse`` keywords (choices, metavar, a default of the CLI's own)."""
    return {"cli": {"help": help, "flag": flag, **argparse_kw}}


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
    # Ground-truth teacher: behaviour cloning of its actions on sampled (learner-visited)
    # states, added to the actor loss with this weight, decaying linearly to 0 over
    # ``bc_decay_updates`` updates (0: constant). Needs ``Adapter.expert``.
    bc_weight: float = 0.0
    bc_decay_updates: int = 0

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

    envs: int = field(default=4096, metadata=cli(
        "parallel environments per seed (sharded over devices)"))
    seeds: int = field(default=1, metadata=cli(
        "independent seeds trained at once with jax.vmap"))
    seed: int = field(default=0, metadata=cli(
        "base random seed (fixes bank, networks, exploration)"))
    total_steps: int = field(default=8, metadata=cli(
        "env steps of all envs in the whole run (transitions = this x envs x seeds)"))
    chunk_steps: int = field(default=2, metadata=cli(
        "env steps per compiled chunk; a held-out evaluation + curriculum check ends "
        "each chunk (with fresh targets: a multiple of --max-steps)"))
    updates_per_step: int = field(default=16, metadata=cli(
        "SAC gradient updates per env step"))
    batch_size: int = field(default=128, metadata=cli(
        "SAC minibatch size"))
    stage: int = field(default=0, metadata=cli(
        f"starting curriculum stage (0..{C.N_STAGES - 1})"))
    encoder: str = field(default="mlp", metadata=cli(
        "observation encoder: MLP over the flat observation or a small CNN over "
        "the log-mels", choices=("mlp", "cnn")))
    hidden: tuple[int, ...] = field(default=(256, 256), metadata=cli(
        "hidden layer widths"))
    duration_s: float = field(default=0.15, metadata=cli(
        "clip length in seconds", flag="--duration"))
    full_analysis: bool = field(default=False, metadata=cli(
        "use the full feature analysis (64 mels, 3 MR-STFT sizes) instead of the "
        "small CPU one"))
    max_steps: int = field(default=4, metadata=cli(
        "edits per episode (time limit: truncation)"))
    bank_size: int = field(default=32, metadata=cli(
        "training targets per stage in the target bank"))
    n_heldout: int = field(default=32, metadata=cli(
        "held-out presets per stage, for the evaluation and the curriculum's "
        "promotion rule", flag="--heldout"))
    heldout_seed: int = field(default=1234, metadata=cli(
        "seed of the held-out presets (fixed; never trained on)"))
    gamma: float = field(default=0.9, metadata=cli(
        "discount"))
    tau: float = field(default=0.02, metadata=cli(
        "Polyak rate of the target critics"))
    lr: float = field(default=1e-3, metadata=cli(
        "Adam learning rate of actor and critics"))
    learning_starts: int = field(default=1, metadata=cli(
        "first env steps that act uniformly at random (within the stage's modules)"))
    buffer_capacity: int = field(default=65536, metadata=cli(
        "replay capacity in transitions (a ring buffer: the oldest are overwritten; "
        "raised to --envs if smaller)"))
    log_mel_dtype: str = field(default="float16", metadata=cli(
        "dtype of log-mels stored in the replay buffer", choices=tuple(replay.LOG_MEL_DTYPES)))
    init_alpha: float = field(default=0.05, metadata=cli(
        "initial entropy temperatures (both heads)"))
    lr_alpha: float = field(default=3e-3, metadata=cli(
        "Adam learning rate of the log-temperatures"))
    target_entropy_c_per_dim: float = field(default=-1.0, metadata=cli(
        "continuous-head entropy target per edited delta entry (nats; "
        "agents.sac.losses.make_losses)", flag="--target-entropy-c"))
    target_entropy_d_ratio: float = field(default=0.5, metadata=cli(
        "discrete-head entropy target as a fraction of log(number of "
        "unlocked modules)", flag="--target-entropy-d"))
    entropy_c_per_module: bool = field(default=True, metadata=cli(
        "measure the continuous-head entropy on all delta entries, not only those "
        "the chosen module edits", flag="--entropy-c-all-dims"))
    best_bonus: float = field(default=0.5, metadata=cli(
        "weight of the episodic best-so-far bonus in the reward "
        "(RewardConfig.best_bonus_scale; 0: improvement only)"))
    # Largest edit of a continuous parameter per step (normalized units; env.default_max_delta
    # base). 0.1, not the env's 0.2: with 0.2 the greedy policy overshoots with its later edits
    # (final-episode loss above the start in 1 of 4 default runs); RESULTS.md "SAC training".
    max_delta: float = field(default=0.1, metadata=cli(
        "largest change of a continuous parameter per edit, in normalized units "
        "(discrete parameters: at least one choice step)"))
    shard: bool = field(default=True, metadata=cli(
        "do not shard envs over local devices", flag="--no-shard"))
    cmaes_targets: int = field(default=0, metadata=cli(
        "CMA-ES warm start: CMA-ES solves this many bank targets; its best "
        "trajectories are replayed in the env and seeded into the replay buffer (0: off)"))
    cmaes_budget: int = field(default=64, metadata=cli(
        "CMA-ES renders per warm-start target"))
    bc_steps: int = field(default=0, metadata=cli(
        "CMA-ES warm start: behaviour-cloning steps on the CMA-ES transitions (0: off)"))
    # Fresh targets: every episode draws a new target per env from the stage's distribution
    # (never a held-out preset) and renders it inside the compiled chunk (agents.env.fresh_targets);
    # False: episodes sample the fixed bank of bank_size targets per stage.
    fresh_targets: bool = field(default=False, metadata=cli(
        "a fresh target per env and episode, drawn and rendered inside the compiled chunk "
        "(never a held-out preset), instead of the fixed bank of --bank-size targets per "
        "stage; --chunk-steps must be a multiple of --max-steps"))
    # Ground-truth teacher (agents.env.expert): behaviour cloning of its action on the states the
    # learner visits (sampled from the buffer), weight teacher_weight in the actor loss,
    # decaying linearly to 0 over teacher_decay updates (0: constant). 0: off.
    teacher_weight: float = field(default=0.0, metadata=cli(
        "weight of behaviour cloning of the ground-truth teacher on the learner's own "
        "states in the actor loss (0: off)"))
    teacher_decay: int = field(default=0, metadata=cli(
        "updates over which --teacher-weight decays linearly to 0 (0: constant)"))
    # Amortized first guess (agents.sac.amortized): every episode, training and held-out, starts
    # from the network's guess of its target, as the learned matcher does when it matches; the
    # network is copied into the run directory (RUN/amortized) so the run carries it. "": off.
    amortized: str = field(default="", metadata=cli(
        "run directory of an amortized network (the --out of python -m agents.amortized_train): "
        "every episode starts from its guess of the target, and so does this run's learned "
        "matcher (agents.match --method sac); needs --fresh-targets", metavar="RUN_DIR"))
    discrete: str = field(default="snap", metadata=cli(
        "discrete parameters (coarse tune, unison voices, filter type, LFO shape): 'snap' keeps "
        "only valid choices in the state; 'latent' keeps the unsnapped value (small deltas "
        "accumulate; the synth snaps when rendering)", choices=("snap", "latent")))

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
            (not self.fresh_targets or self.chunk_steps % self.max_steps == 0,
             f"with fresh targets (one new target per episode) --chunk-steps ({self.chunk_steps}) "
             f"must be a multiple of --max-steps ({self.max_steps}); or leave out --fresh-targets"),
            (self.teacher_weight >= 0 and self.teacher_decay >= 0,
             "--teacher-weight and --teacher-decay must be >= 0"),
            (not self.amortized or self.fresh_targets,
             "--amortized starts every episode from the network's guess of a fresh target: "
             "also pass --fresh-targets"),
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
                               max_steps=self.max_steps, bank_size=self.bank_size, reward=reward,
                               discrete=self.discrete)
        return E.small_config(self.duration_s, max_steps=self.max_steps, bank_size=self.bank_size,
                              build_chunk=min(32, self.bank_size), reward=reward, discrete=self.discrete)

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
            encoder=self.encoder, log_mel_dtype=self.log_mel_dtype, shard_envs=self.shard,
            bc_weight=self.teacher_weight, bc_decay_updates=self.teacher_decay)

    def fingerprint(self) -> dict:
        """Fields a resumed run must share with the checkpoint (total_steps may grow)."""
        d = dataclasses.asdict(self)
        d.pop("total_steps")
        return ckpt.fingerprint(d)


@dataclass(frozen=True)
class RunOptions:
    """Host-side options that do not change the numbers."""

    out: str = field(default="runs/sac", metadata=cli(
        "output directory (logs, media, checkpoints); default: a new "
        "runs/sac/<UTC date-time> per run, so repeating a command never collides", default=None))
    resume: bool = field(default=False, metadata=cli(
        "continue the run checkpointed in --out"))
    resume_from: int | None = field(default=None, metadata=cli(
        "continue from checkpoint STEP instead of the newest (when the newest is "
        "refused as corrupt); newer checkpoints are moved to checkpoints.set_aside/, "
        "not deleted", metavar="STEP"))
    progress: bool = field(default=True, metadata=cli(
        "no progress bar", flag="--no-progress"))
    checkpoint_every: int = field(default=1, metadata=cli(
        "chunks between checkpoints"))
    save_buffer: bool = field(default=True, metadata=cli(
        "leave the replay buffer out of checkpoints (smaller; a resume restarts it "
        "empty)", flag="--no-buffer-checkpoint"))
    media_top_k: int = field(default=3, metadata=cli(
        "audio/PNG items kept per stage and kind (best/worst held-out)"))
    media: bool = field(default=True, metadata=cli(
        "write no audio/PNG media", flag="--no-media"))
    tensorboard: bool = field(default=True, metadata=cli(
        "write no TensorBoard event files (JSONL logs only)", flag="--no-tensorboard"))
    distributed: bool = field(default=False, metadata=cli(
        "train over several processes/hosts with jax.distributed: start the same command once per "
        "process; the cluster (SLURM, Open MPI, Kubernetes) is detected, or give the three flags "
        "below (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)"))
    coordinator_address: str | None = field(default=None, metadata=cli(
        "with --distributed: HOST:PORT of process 0's coordinator", metavar="HOST:PORT"))
    num_processes: int | None = field(default=None, metadata=cli(
        "with --distributed: the number of processes", metavar="N"))
    process_id: int | None = field(default=None, metadata=cli(
        "with --distributed: this process's id in [0, N)", metavar="I"))
