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
import sys
import time
from pathlib import Path

import jax
import numpy as np

from agents import curriculum as C
from agents.sac import checkpoint as ckpt
from agents.sac import replay
from agents.sac.config import RunOptions, TrainConfig
from agents.sac.run import run
from jaxsynth.io import OutputPathError


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
    a("--resume-from", type=int, default=None, metavar="STEP",
      help="continue from checkpoint STEP instead of the newest (when the newest is refused as "
           "corrupt); newer checkpoints are moved to checkpoints.set_aside/, not deleted")
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
        cfg.sac_config()  # validates the SAC settings
        if ns.checkpoint_every < 1 or ns.media_top_k < 1:
            raise ValueError("--checkpoint-every and --media-top-k must be >= 1")
    except ValueError as e:
        p.error(str(e))
    if ns.out is None:
        if ns.resume or ns.resume_from is not None:
            p.error("--resume needs --out DIR: the directory of the run to continue")
        ns.out = str(Path(RunOptions.out) / time.strftime("%Y%m%d-%H%M%S", time.gmtime()))
    opts = RunOptions(out=ns.out, resume=ns.resume or ns.resume_from is not None,
                      resume_from=ns.resume_from, progress=not ns.no_progress,
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
    except (ckpt.CheckpointError, OutputPathError) as e:
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
