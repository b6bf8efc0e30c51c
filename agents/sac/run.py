"""One training run: the thin host loop around the compiled chunks (Brax style).

``Setup`` builds the environment, the target bank, the held-out bank and the jitted
``init``/``chunk``/``evaluate`` once; ``run`` optionally warm-starts from CMA-ES teacher data,
then runs one compiled chunk at a time and, between chunks, updates the progress bar, writes
TensorBoard/JSONL logs and A/B media (``agents.sac.logs``) and saves an orbax checkpoint
(``agents.sac.checkpoint``). ``python -m agents.sac_train`` is its CLI.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from agents import curriculum as C
from agents import env as E
from agents.env.fresh_targets import stage_starts
from agents.rendering import render_analyze_chunked
from agents.sac import checkpoint as ckpt
from agents.sac import distributed as dist
from agents.sac import replay
from agents.sac import trainer as sac
from agents.sac.amortized import RUN_COPY as AMORTIZED_COPY
from agents.sac.amortized import (
    AmortizedLoadError,
    LoadedAmortized,
    check_amortized_env,
    load_amortized,
    save_amortized,
)
from agents.sac.amortized import start_fn as amortized_start_fn
from agents.sac.config import RunOptions, TrainConfig
from agents.sac.logs import MediaStore, ScalarLogger, rewind_logs, write_ab
from agents.sac.synth_adapter import SynthTrainParams, synth_adapter
from agents.sac.teacher import cmaes_transitions, make_behaviour_cloning
from jaxsynth.io import atomic_write, check_output_dir


class Setup:
    """Environment, banks, trainer and jitted functions of one run (built once)."""

    def __init__(self, cfg: TrainConfig, amortized: LoadedAmortized | None = None):
        """``amortized``: the network ``cfg.amortized`` names, already loaded (``run`` loads it
        before anything expensive; a resumed run, from its own copy RUN/amortized)."""
        self.cfg = cfg
        self.env = E.SynthMatchEnv(cfg.env_config())
        bank_key = jax.random.key(cfg.seed)
        env_params = self.env.make_params(E.build_bank(bank_key, self.env.config), stage=cfg.stage,
                                          max_delta=cfg.max_delta01())
        heldout = E.build_heldout_bank(bank_key, self.env.config, cfg.heldout_seed, cfg.n_heldout)
        self.amortized, start = None, None
        if cfg.amortized:
            self.amortized = amortized if amortized is not None else load_amortized(cfg.amortized)
            check_amortized_env(self.amortized, self.env.config)
            start = amortized_start_fn(self.amortized)
            heldout = E.with_paired_starts(heldout, guess_starts(start, heldout.params01), self.env.config)
        self.params = SynthTrainParams(env_params, heldout)
        self.sac_cfg = cfg.sac_config()
        self.adapter = synth_adapter(self.env, cfg.log_mel_dtype, fresh=cfg.fresh_targets,
                                     n_envs=cfg.envs, buffer_capacity=self.sac_cfg.buffer_capacity,
                                     start_fn=start, teacher=cfg.teacher_weight > 0)
        self.trainer = sac.make_trainer(self.sac_cfg, self.adapter)
        self.keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.seeds)
        self.init = jax.jit(jax.vmap(self.trainer.init, in_axes=(0, None)))
        self.chunk = jax.jit(jax.vmap(self.trainer.chunk, in_axes=(0, None)), donate_argnums=0)
        self.evaluate = jax.jit(jax.vmap(self.trainer.evaluate, in_axes=(0, None)))


def guess_starts(start, targets01) -> np.ndarray:
    """The start function's preset for every target of a (stages, n, N) set, with the modules a
    stage locks at their defaults (as ``agents.env.fresh_targets`` does for training starts)."""
    n_stages, n = targets01.shape[:2]

    @jax.jit
    def per_stage(t):
        x = start(None, jnp.reshape(t, (n_stages * n, -1)), None, None).reshape(n_stages, n, -1)
        return jax.vmap(stage_starts)(x, jnp.arange(n_stages))

    return np.asarray(per_stage(targets01), np.float32)


def warm_start(setup: Setup, runner: sac.Runner, log=print) -> tuple[sac.Runner, dict]:
    """CMA-ES warm start: put CMA-ES transitions into every seed's buffer, then behaviour-clone
    the actor."""
    cfg = setup.cfg
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
        bc = make_behaviour_cloning(setup.sac_cfg, setup.adapter, actor, cfg.bc_steps,
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
            audio, feats = render_analyze_chunked(pair, hb.render_key, cfg.synth, cfg.features,
                                                  cfg.note, cfg.velocity, chunk=2)
            mel = E.level_log_mel(feats)
            return write_ab(d, stem, audio[0], audio[1], cfg.synth.sample_rate, mel[0], mel[1],
                            f"stage {stage} held-out #{i} ({kind}) loss {losses[i]:.3f}")

        store.add(stage, kind, float(losses[i]), f"chunk{chunk:05d}_t{i:03d}", writer)


def run(cfg: TrainConfig, opts: RunOptions = RunOptions(), log=print, setup: Setup | None = None) -> dict:
    """Train; returns a summary dict (held-out medians per chunk, throughput, paths).

    ``setup`` reuses a built ``Setup`` (banks and compiled functions) of a config that differs
    from ``cfg`` at most in ``total_steps`` (tests; resuming in one process)."""
    if setup is not None and setup.cfg.fingerprint() != cfg.fingerprint():
        raise ValueError("run(setup=...) needs a Setup built from the same config (total_steps aside)")
    if opts.distributed and jax.process_count() == 1:
        raise dist.DistributedError("RunOptions.distributed: call agents.sac.distributed.initialize() "
                                    "before any JAX computation (python -m agents.sac_train does)")
    if dist.is_multiprocess() and cfg.cmaes_targets:
        raise dist.DistributedError("the CMA-ES warm start (--cmaes-targets) runs in one process only; "
                                    "drop it, or train without --distributed")
    is_main = jax.process_index() == 0
    out = Path(check_output_dir(opts.out))
    ckpt_dir = out / "checkpoints"
    resume_step = resume_checkpoint(ckpt_dir, opts, cfg)  # fails before the expensive setup

    t_setup = time.time()
    own_copy = out / AMORTIZED_COPY
    amortized = None
    if cfg.amortized and setup is None:  # a bad network fails here, before the banks are built
        try:
            amortized = load_amortized(own_copy if resume_step is not None and own_copy.is_dir() else cfg.amortized)
            check_amortized_env(amortized, cfg.env_config())
        except AmortizedLoadError as e:  # a saved network that cannot be used, like a bad checkpoint
            raise ckpt.CheckpointError(f"--amortized: {e}") from e
    setup = Setup(cfg, amortized) if setup is None else setup
    if setup.amortized is not None and is_main and not own_copy.is_dir():  # the run carries its start
        save_amortized(own_copy, setup.amortized.net_params, setup.amortized.config, setup.amortized.summary)
    log(f"setup (target bank + held-out bank): {time.time() - t_setup:.1f} s; "
        f"{cfg.envs} envs x {cfg.seeds} seeds on {jax.device_count()} device(s) in "
        f"{jax.process_count()} process(es); replay "
        f"{setup.sac_cfg.buffer_capacity} transitions x "
        f"{replay.bytes_per_item(setup.adapter.example_transition)} B")
    t_c = time.time()
    params, keys = dist.replicate((setup.params, setup.keys))  # global arrays with >1 process
    runner = dist.compiled(setup.init, keys, params)(keys, params)
    jax.block_until_ready(runner)
    chunk = dist.compiled(setup.chunk, runner, params)  # processes meet after compiling
    start_chunk, warm_info = 0, {}
    if resume_step is not None:
        has_buffer = bool(ckpt.read_metadata(ckpt_dir, resume_step).get("has_buffer", True))
        tree, meta = ckpt.restore(ckpt_dir, _checkpoint_tree(runner, has_buffer),
                                  cfg.fingerprint(), step=resume_step)
        tree = dist.put_like(tree, _checkpoint_tree(runner, has_buffer))
        runner = tree if tree.buffer is not None else tree.replace(buffer=runner.buffer)
        start_chunk = int(meta["chunk"])
        moved = ckpt.set_aside_after(ckpt_dir, resume_step) if is_main else []
        log(f"resumed from chunk {start_chunk} (stage {meta.get('stage')})"
            + (f"; checkpoints {moved} moved to {ckpt.set_aside_dir(ckpt_dir)}" if moved else ""))
    elif cfg.cmaes_targets:
        runner, warm_info = warm_start(setup, runner, log)

    if is_main:  # rows logged after the checkpoint (before a kill) would be logged twice
        rewind_logs(out, start_chunk * cfg.chunk_steps if resume_step is not None else -1)
    logger = ScalarLogger(out, opts.tensorboard) if is_main else None
    if start_chunk == 0:  # the untrained (or warm-started) policy: the baseline to beat
        ev0 = dist.to_host(dist.compiled(setup.evaluate, runner, params)(runner, params))
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
        runner, metrics = chunk(runner, params)
        metrics = dist.to_host(metrics)
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
            state = dist.to_host(_checkpoint_tree(runner, opts.save_buffer))  # every process gathers
            if is_main:  # one process writes
                meta = {"config": cfg.fingerprint(), "chunk": c + 1, "has_buffer": opts.save_buffer,
                        "stage": np.asarray(state.stage).tolist()}
                logger.flush()  # every row up to the checkpoint is on disk before it exists
                ckpt.save(ckpt_dir, c + 1, state, meta)
        dist.barrier("chunk")  # the others wait while process 0 writes
    if bar is not None:
        bar.close()
    if logger is not None:
        logger.close()
    summary["total_seconds_incl_compile"] = time.time() - t_c
    summary["runner"] = runner
    if is_main:
        slim = {k: v for k, v in summary.items() if k != "runner"}
        atomic_write(out / "summary.json", json.dumps(slim, indent=1, default=float))
    return summary


def resume_checkpoint(ckpt_dir: Path, opts: RunOptions, cfg: TrainConfig) -> int | None:
    """The checkpoint step to resume from (None: a fresh run), checked as far as is cheap
    (files against their integrity record, metadata, config) before any setup work."""
    steps = ckpt.all_steps(ckpt_dir)
    resuming = opts.resume or opts.resume_from is not None
    if resuming and not steps:
        raise ckpt.CheckpointError(f"--resume given but {ckpt_dir} holds no checkpoint; "
                                   "drop --resume to start a fresh run")
    if not resuming:
        if steps:
            raise ckpt.CheckpointError(f"{ckpt_dir} already holds a checkpoint (chunk {steps[-1]}); "
                                       "pass --resume to continue it or choose another --out "
                                       "(nothing was overwritten)")
        return None
    step = steps[-1] if opts.resume_from is None else int(opts.resume_from)
    if step not in steps:
        raise ckpt.CheckpointError(f"--resume-from {step}: {ckpt_dir} holds no checkpoint {step}; "
                                   f"it holds {steps}")
    ckpt.verify_files(ckpt_dir, step)
    ckpt.check_metadata(ckpt.read_metadata(ckpt_dir, step), cfg.fingerprint(), ckpt_dir)
    return step
