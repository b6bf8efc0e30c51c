"""Train the hybrid SAC sound-matching agent: ``python -m agents.sac_train --envs 4096``.

The run is a sequence of compiled chunks (Brax style): each chunk is ONE jitted ``lax.scan``
of ``--chunk-steps`` env steps of all envs (each followed by ``--updates-per-step`` SAC
updates) ending with a held-out evaluation and the curriculum rule (D4). Between chunks this
thin host loop updates the progress bar, writes TensorBoard/JSONL logs and media, and saves an
orbax checkpoint. ``--seeds N`` trains N independent seeds at once (``jax.vmap``); envs are
sharded over all local devices (``jax.sharding``).

Multi-host (GPU/TPU pods): start one process per host with the same flags and call
``jax.distributed.initialize()`` first (``--distributed``); ``jax.devices()`` then spans every
host, the env axis is sharded over all of them by XLA's SPMD partitioner, and only process 0
writes logs and checkpoints.

The defaults are sized for a 2-core CPU (a few minutes including compilation, with visible
learning at ``--envs 4096``): short 0.15 s clips with 32 mel bands (``env.small_config``),
few env steps and many updates per step. For real runs on a GPU raise ``--total-steps``,
``--duration`` (0.5 s is the full analysis), ``--bank-size`` and ``--batch-size``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from agents import checkpoint as ckpt
from agents import curriculum as C
from agents import env as E
from agents import replay
from agents import sac
from agents.logging_utils import MediaStore, ScalarLogger, write_ab
from agents.synth_adapter import SynthTrainParams, build_heldout_bank, synth_adapter
from jaxsynth.reward import RewardConfig


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
    target_entropy_c_per_dim: float = -1.0  # continuous head: H_c* = this * (entries edited; sac.make_losses)
    target_entropy_d_ratio: float = 0.5  # discrete head: H_d* = this * log(n_allowed modules)
    entropy_c_per_module: bool = True  # continuous entropy on the edited entries only (sac.make_losses)
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

    def sac_config(self) -> sac.SACConfig:
        cap = self.buffer_capacity
        return sac.SACConfig(
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
    progress: bool = True
    checkpoint_every: int = 1  # chunks
    save_buffer: bool = True
    media_top_k: int = 3
    media: bool = True
    tensorboard: bool = True
    distributed: bool = False


class Setup:
    """Environment, banks, trainer and jitted functions of one run (built once)."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.env = E.SynthMatchEnv(cfg.env_config())
        bank_key = jax.random.key(cfg.seed)
        env_params = self.env.make_params(E.build_bank(bank_key, self.env.config), stage=cfg.stage,
                                          max_delta=cfg.max_delta01())
        heldout = build_heldout_bank(self.env, env_params, cfg.heldout_seed, cfg.n_heldout)
        self.params = SynthTrainParams(env_params, heldout)
        self.adapter = synth_adapter(self.env, cfg.log_mel_dtype)
        self.sac_cfg = cfg.sac_config()
        self.trainer = sac.make_trainer(self.sac_cfg, self.adapter)
        self.keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.seeds)
        self.init = jax.jit(jax.vmap(self.trainer.init, in_axes=(0, None)))
        self.chunk = jax.jit(jax.vmap(self.trainer.chunk, in_axes=(0, None)), donate_argnums=0)
        self.evaluate = jax.jit(jax.vmap(self.trainer.evaluate, in_axes=(0, None)))


def warm_start(setup: Setup, runner: sac.Runner, log=print) -> tuple[sac.Runner, dict]:
    """D5: put CMA-ES transitions into every seed's buffer, then behaviour-clone the actor."""
    cfg = setup.cfg
    from agents.cmaes import cmaes_transitions
    t0 = time.time()
    n_targets = min(cfg.cmaes_targets, setup.env.config.bank_size)
    tr, _ = cmaes_transitions(jax.random.key(cfg.seed + 7919), setup.env, setup.params.env,
                              np.arange(n_targets), cfg.cmaes_budget)
    n = int(jax.tree.leaves(tr)[0].shape[0])
    add = jax.jit(jax.vmap(replay.add, in_axes=(0, None)))
    runner = runner.replace(buffer=add(runner.buffer, tr))
    info = {"warm_transitions": n, "warm_teacher_reward_mean": float(jnp.mean(tr.reward)),
            "warm_seconds": time.time() - t0}
    if cfg.bc_steps:
        actor = setup.trainer.networks[0]
        bc = sac.make_behaviour_cloning(setup.sac_cfg, setup.adapter, actor, cfg.bc_steps,
                                        cfg.batch_size)
        bc_v = jax.jit(jax.vmap(bc, in_axes=(0, 0, 0, None)))
        keys = jax.random.split(jax.random.PRNGKey(cfg.seed + 1), cfg.seeds)
        new_sac, losses = bc_v(runner.sac, runner.buffer, keys, setup.params)
        runner = runner.replace(sac=new_sac)
        info.update(bc_loss_first=float(losses[:, 0].mean()), bc_loss_last=float(losses[:, -1].mean()))
    log(f"warm start: {info}")
    return runner, info


def _checkpoint_tree(runner: sac.Runner, save_buffer: bool):
    return runner if save_buffer else runner.replace(buffer=None)


def _media(setup: Setup, store: MediaStore, ev: dict, chunk: int) -> None:
    """Best and worst held-out match of seed 0 -> FLAC A/B + PNG (top-K retention)."""
    from agents.target_bank import render_features
    from jaxsynth.synth import render_batch

    cfg = setup.env.config
    losses = np.asarray(ev["heldout_final_loss"][0])
    finals = np.asarray(ev["heldout_final_params01"][0])
    stage = int(np.asarray(ev["stage"])[0])
    hb = setup.params.heldout
    for kind, i in (("best", int(np.argmin(losses))), ("worst", int(np.argmax(losses)))):
        if not store.would_keep(stage, kind, float(losses[i])):
            continue
        target01 = np.asarray(hb.params01[stage, i])
        pair = np.stack([target01, finals[i]])

        def writer(d, stem, pair=pair, i=i, kind=kind):
            keys = jnp.stack([hb.render_key, hb.render_key])
            audio = np.asarray(render_batch(jnp.asarray(pair), keys, cfg.synth, note=cfg.note,
                                            velocity=cfg.velocity))
            mel, _ = render_features(pair, hb.render_key, cfg)
            return write_ab(d, stem, audio[0], audio[1], cfg.synth.sample_rate, mel[0], mel[1],
                            f"stage {stage} held-out #{i} ({kind}) loss {losses[i]:.3f}")

        store.add(stage, kind, float(losses[i]), f"chunk{chunk:05d}_t{i:03d}", writer)


def run(cfg: TrainConfig, opts: RunOptions = RunOptions(), log=print, setup: Setup | None = None) -> dict:
    """Train; returns a summary dict (held-out medians per chunk, throughput, paths).

    ``setup`` reuses a built ``Setup`` (banks and compiled functions) of a config that differs
    from ``cfg`` at most in ``total_steps`` (tests; resuming in one process)."""
    if setup is not None and setup.cfg.fingerprint() != cfg.fingerprint():
        raise ValueError("run(setup=...) needs a Setup built from the same config (total_steps aside)")
    if opts.distributed:
        jax.distributed.initialize()
    is_main = jax.process_index() == 0
    out = Path(opts.out)
    ckpt_dir = (out / "checkpoints").absolute()
    existing = ckpt.latest_step(ckpt_dir)
    if opts.resume and existing is None:
        raise ckpt.CheckpointError(f"--resume given but {ckpt_dir} holds no checkpoint; "
                                   "drop --resume to start a fresh run")
    if not opts.resume and existing is not None:
        raise ckpt.CheckpointError(f"{ckpt_dir} already holds a checkpoint (chunk {existing}); pass "
                                   "--resume to continue it or choose another --out (nothing was "
                                   "overwritten)")
    if opts.resume:  # fail before the expensive setup
        ckpt.check_metadata(ckpt.read_metadata(ckpt_dir), cfg.fingerprint(), ckpt_dir)

    t_setup = time.time()
    setup = Setup(cfg) if setup is None else setup
    log(f"setup (target bank + held-out bank): {time.time() - t_setup:.1f} s; "
        f"{cfg.envs} envs x {cfg.seeds} seeds on {jax.device_count()} device(s); replay "
        f"{setup.sac_cfg.buffer_capacity} transitions x "
        f"{replay.bytes_per_item(setup.adapter.example_transition)} B")
    t_c = time.time()
    runner = setup.init(setup.keys, setup.params)
    jax.block_until_ready(runner)
    start_chunk, warm_info = 0, {}
    if opts.resume:
        tree, meta = ckpt.restore(ckpt_dir, _checkpoint_tree(runner, meta_buffer(ckpt_dir, opts)),
                                  cfg.fingerprint())
        runner = tree if tree.buffer is not None else tree.replace(buffer=runner.buffer)
        start_chunk = int(meta["chunk"])
        log(f"resumed from chunk {start_chunk} (stage {meta.get('stage')})")
    elif cfg.cmaes_targets:
        runner, warm_info = warm_start(setup, runner, log)

    logger = ScalarLogger(out, opts.tensorboard) if is_main else None
    if start_chunk == 0:  # the untrained (or warm-started) policy: the baseline to beat
        ev0 = jax.device_get(setup.evaluate(runner, setup.params))
        summary0 = np.asarray(ev0["heldout_median_loss"]).tolist()
        if logger is not None:
            logger.log(0, {"heldout_median_loss": float(np.mean(summary0)),
                           "heldout_median_final_loss": float(np.mean(ev0["heldout_median_final_loss"])),
                           "heldout_median_start_loss": float(np.mean(ev0["heldout_median_start_loss"]))},
                       "eval")
        final0 = np.asarray(ev0["heldout_median_final_loss"]).tolist()
        log(f"held-out median loss before training: best-in-episode {summary0}, final {final0}")
    else:
        summary0 = final0 = None
    store = MediaStore(out / "media", opts.media_top_k)
    summary = {"heldout_median_loss": [], "stage": [], "chunk_seconds": [], "warm_start": warm_info,
               "heldout_median_loss_untrained": summary0, "heldout_median_final_loss": [],
               "heldout_median_final_loss_untrained": final0}
    bar = None
    if opts.progress and is_main:
        from tqdm import tqdm
        bar = tqdm(total=cfg.n_chunks, initial=start_chunk, unit="chunk", dynamic_ncols=True,
                   file=sys.stderr)
    transitions_per_chunk = cfg.chunk_steps * cfg.envs * cfg.seeds
    for c in range(start_chunk, cfg.n_chunks):
        t0 = time.time()
        runner, metrics = setup.chunk(runner, setup.params)
        metrics = jax.device_get(metrics)
        dt = time.time() - t0
        ev = metrics["eval"]
        med = np.asarray(ev["heldout_median_loss"])  # (seeds,)
        summary["heldout_median_loss"].append(med.tolist())
        summary["heldout_median_final_loss"].append(np.asarray(ev["heldout_median_final_loss"]).tolist())
        summary["stage"].append(np.asarray(ev["next_stage"]).tolist())
        summary["chunk_seconds"].append(dt)
        if is_main:
            base = c * cfg.chunk_steps
            for i in range(cfg.chunk_steps):
                row = {k: np.mean(v[:, i]) for k, v in metrics["steps"].items()}
                logger.log(base + i + 1, row, "train")
            sps = transitions_per_chunk / dt
            logger.log(base + cfg.chunk_steps, {
                "heldout_median_loss": float(med.mean()),
                "heldout_median_final_loss": float(np.mean(ev["heldout_median_final_loss"])),
                "heldout_median_start_loss": float(np.mean(ev["heldout_median_start_loss"])),
                "stage": float(np.mean(ev["stage"])), "next_stage": float(np.mean(ev["next_stage"])),
                "threshold": float(C.STAGES[int(np.asarray(ev["stage"])[0])].threshold),
                "env_steps_per_s": sps,
                "updates_per_s": cfg.chunk_steps * cfg.updates_per_step * cfg.seeds / dt,
                "chunk_seconds": dt, "buffer_size": float(np.mean(ev["buffer_size"]))}, "eval")
            if opts.media:
                _media(setup, store, ev, c)
            if bar is not None:
                bar.set_postfix_str(f"env-steps/s {sps:,.0f} stage {np.asarray(ev['next_stage']).tolist()} "
                                    f"held-out {med.mean():.3f}")
                bar.update(1)
            if (c + 1) % opts.checkpoint_every == 0 or c + 1 == cfg.n_chunks:
                meta = {"config": cfg.fingerprint(), "chunk": c + 1, "has_buffer": opts.save_buffer,
                        "stage": np.asarray(runner.stage).tolist()}
                ckpt.save(ckpt_dir, c + 1, _checkpoint_tree(runner, opts.save_buffer), meta)
    if bar is not None:
        bar.close()
    if logger is not None:
        logger.close()
    summary["total_seconds_incl_compile"] = time.time() - t_c
    summary["runner"] = runner
    if is_main:
        slim = {k: v for k, v in summary.items() if k != "runner"}
        (out / "summary.json").write_text(json.dumps(slim, indent=1, default=float))
    return summary


def meta_buffer(ckpt_dir, opts: RunOptions) -> bool:
    """Whether the checkpoint holds the replay buffer (else it restarts empty)."""
    return bool(ckpt.read_metadata(ckpt_dir).get("has_buffer", True))


# ---------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m agents.sac_train",
        description="Train the hybrid SAC sound-matching agent (PureJaxRL-style compiled chunks). "
                    "Defaults finish in a few minutes on a 2-core CPU; scale up by flags on a GPU.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--envs", type=int, default=d.envs, help="parallel environments per seed (sharded over devices)")
    a("--seeds", type=int, default=d.seeds, help="independent seeds trained at once with jax.vmap")
    a("--seed", type=int, default=d.seed, help="base random seed (fixes bank, networks, exploration)")
    a("--total-steps", type=int, default=d.total_steps,
      help="env steps of all envs in the whole run (transitions = this x envs x seeds)")
    a("--chunk-steps", type=int, default=d.chunk_steps,
      help="env steps per compiled chunk; a held-out evaluation + curriculum check ends each chunk")
    a("--updates-per-step", type=int, default=d.updates_per_step, help="SAC gradient updates per env step")
    a("--batch-size", type=int, default=d.batch_size, help="SAC minibatch size")
    a("--stage", type=int, default=d.stage, help=f"starting curriculum stage (0..{C.N_STAGES - 1})")
    a("--encoder", choices=("mlp", "cnn"), default=d.encoder,
      help="observation encoder: MLP over the flat observation or a small CNN over the log-mels (Q1)")
    a("--hidden", type=int, nargs="+", default=list(d.hidden), help="hidden layer widths")
    a("--duration", type=float, default=d.duration_s, help="clip length in seconds")
    a("--full-analysis", action="store_true",
      help="use the full feature analysis (64 mels, 4 MR-STFT sizes) instead of the small CPU one")
    a("--max-steps", type=int, default=d.max_steps, help="edits per episode (time limit: truncation)")
    a("--bank-size", type=int, default=d.bank_size, help="training targets per stage in the target bank")
    a("--heldout", type=int, default=d.n_heldout, help="held-out presets per stage for evaluation (D4)")
    a("--gamma", type=float, default=d.gamma, help="discount")
    a("--tau", type=float, default=d.tau, help="Polyak rate of the target critics")
    a("--lr", type=float, default=d.lr, help="Adam learning rate of actor and critics")
    a("--init-alpha", type=float, default=d.init_alpha, help="initial entropy temperatures (both heads)")
    a("--lr-alpha", type=float, default=d.lr_alpha, help="Adam learning rate of the log-temperatures")
    a("--target-entropy-c", type=float, default=d.target_entropy_c_per_dim,
      help="continuous-head entropy target per delta dimension (nats)")
    a("--target-entropy-d", type=float, default=d.target_entropy_d_ratio,
      help="discrete-head entropy target as a fraction of log(number of unlocked modules)")
    a("--entropy-c-all-dims", action="store_true",
      help="measure the continuous-head entropy on all delta entries, not only those the chosen "
           "module edits")
    a("--best-bonus", type=float, default=d.best_bonus,
      help="weight of the D3 best-so-far bonus in the reward (0: improvement only)")
    a("--max-delta", type=float, default=d.max_delta,
      help="largest change of a continuous parameter per edit, in normalized units (discrete "
           "parameters: at least one choice step)")
    a("--buffer-capacity", type=int, default=d.buffer_capacity,
      help="replay capacity in transitions (raised to --envs if smaller)")
    a("--log-mel-dtype", choices=tuple(replay.LOG_MEL_DTYPES), default=d.log_mel_dtype,
      help="dtype of log-mels stored in the replay buffer")
    a("--no-shard", action="store_true", help="do not shard envs over local devices")
    a("--cmaes-targets", type=int, default=d.cmaes_targets,
      help="D5 warm start: CMA-ES solves this many bank targets; its best trajectories are "
           "replayed in the env and seeded into the replay buffer (0: off)")
    a("--cmaes-budget", type=int, default=d.cmaes_budget, help="CMA-ES renders per warm-start target")
    a("--bc-steps", type=int, default=d.bc_steps,
      help="D5 warm start: behaviour-cloning steps on the CMA-ES transitions (0: off)")
    a("--out", default=None, help="output directory (logs, media, checkpoints); default: a new "
      f"{RunOptions.out}/<UTC date-time> per run, so repeating a command never collides")
    a("--resume", action="store_true", help="continue the run checkpointed in --out")
    a("--checkpoint-every", type=int, default=RunOptions.checkpoint_every, help="chunks between checkpoints")
    a("--no-buffer-checkpoint", action="store_true",
      help="leave the replay buffer out of checkpoints (smaller; a resume restarts it empty)")
    a("--media-top-k", type=int, default=RunOptions.media_top_k,
      help="audio/PNG items kept per stage and kind (best/worst held-out)")
    a("--no-media", action="store_true", help="write no audio/PNG media")
    a("--no-progress", action="store_true", help="no progress bar")
    a("--distributed", action="store_true", help="call jax.distributed.initialize() (multi-host)")
    return p


def parse_args(argv=None) -> tuple[TrainConfig, RunOptions]:
    p = build_parser()
    ns = p.parse_args(argv)
    try:
        cfg = TrainConfig(
            envs=ns.envs, seeds=ns.seeds, seed=ns.seed, total_steps=ns.total_steps,
            chunk_steps=ns.chunk_steps, updates_per_step=ns.updates_per_step,
            batch_size=ns.batch_size, stage=ns.stage, encoder=ns.encoder, hidden=tuple(ns.hidden),
            duration_s=ns.duration, full_analysis=ns.full_analysis, max_steps=ns.max_steps,
            bank_size=ns.bank_size, n_heldout=ns.heldout, gamma=ns.gamma, tau=ns.tau, lr=ns.lr,
            init_alpha=ns.init_alpha, lr_alpha=ns.lr_alpha, target_entropy_c_per_dim=ns.target_entropy_c,
            target_entropy_d_ratio=ns.target_entropy_d, best_bonus=ns.best_bonus,
            entropy_c_per_module=not ns.entropy_c_all_dims, max_delta=ns.max_delta,
            buffer_capacity=ns.buffer_capacity,
            log_mel_dtype=ns.log_mel_dtype, shard=not ns.no_shard,
            cmaes_targets=ns.cmaes_targets, cmaes_budget=ns.cmaes_budget, bc_steps=ns.bc_steps)
        sac.SACConfig.__post_init__(cfg.sac_config())
        if ns.checkpoint_every < 1 or ns.media_top_k < 1:
            raise ValueError("--checkpoint-every and --media-top-k must be >= 1")
    except ValueError as e:
        p.error(str(e))
    if ns.out is None:
        if ns.resume:
            p.error("--resume needs --out DIR: the directory of the run to continue")
        ns.out = str(Path(RunOptions.out) / time.strftime("%Y%m%d-%H%M%S", time.gmtime()))
    opts = RunOptions(out=ns.out, resume=ns.resume, progress=not ns.no_progress,
                      checkpoint_every=ns.checkpoint_every, save_buffer=not ns.no_buffer_checkpoint,
                      media_top_k=ns.media_top_k, media=not ns.no_media, distributed=ns.distributed)
    return cfg, opts


def main(argv=None) -> int:
    cfg, opts = parse_args(argv)
    # Persistent XLA cache: a second run with the same shapes skips most compilation.
    jax.config.update("jax_compilation_cache_dir", str(Path.home() / ".cache" / "jaxsynth" / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    try:
        summary = run(cfg, opts)
    except ckpt.CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    med = summary["heldout_median_loss"]
    def seed_mean(per_seed) -> float:  # None: no untrained evaluation (a resumed run)
        return round(float(np.mean(per_seed)), 4) if per_seed is not None else float("nan")

    print(f"held-out median loss per chunk (seed mean): best-in-episode {[seed_mean(m) for m in med]}, "
          f"final {[seed_mean(m) for m in summary['heldout_median_final_loss']]} (untrained: best "
          f"{seed_mean(summary['heldout_median_loss_untrained'])}, final "
          f"{seed_mean(summary['heldout_median_final_loss_untrained'])}); stage {summary['stage'][-1]}; "
          f"{summary['total_seconds_incl_compile']:.1f} s incl. compile; logs in {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
