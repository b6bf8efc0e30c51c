"""SAC training throughput and the fusion speed-up: one jitted ``lax.scan`` over K env steps
(+ updates) vs a host Python loop over the same jitted one-step program.

Per number of envs, the same work -- K env steps of ``n_envs`` envs, each followed by
``updates_per_step`` SAC updates (``agents.sac.trainer.make_trainer``'s chunk, the body of the fused
``sac.make_train``) -- is run three ways:

* ``fused``: one call of the chunk compiled with ``steps_per_eval = K`` (one ``lax.scan``);
* ``loop``: K calls of the chunk compiled with ``steps_per_eval = 1`` from a Python loop,
  dispatched asynchronously (no host sync between steps; the runner is donated as in
  ``agents.sac_train``);
* ``loop-sync``: the same loop reading one metric back to the host after every step, as a
  loop that logs every step does.

The held-out evaluation that ends every chunk is **replaced by a constant** in all three (an
adapter whose ``evaluate`` returns an infinite loss, so the curriculum never advances), so
the figure measures fusion, not K evaluations vs one; the cost of one real evaluation is
timed apart (``eval_s``). Compile time is reported apart (lower + compile); steady-state
times are medians of ``--reps`` runs, each from a fresh runner after a warm-up run.

    python benchmarks/train_throughput.py                    # envs 64 256 1024, K 8
    python benchmarks/train_throughput.py --quick            # smoke run (envs 8, K 2)
    python benchmarks/train_throughput.py --json out.json --write-results
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agents.sac import trainer as sac  # noqa: E402
from agents.sac import run as T  # noqa: E402
from agents.sac.config import TrainConfig  # noqa: E402
from benchmarks.common import (RESULTS_MD, compile_jit, load_avg, max_rss_mb, metadata,  # noqa: E402
                               metadata_lines, write_json, write_sections)

SECTION = "## Fusion speed-up (training)"
MODES = ("fused", "loop", "loop-sync")


def no_eval_adapter(adapter: sac.Adapter) -> sac.Adapter:
    """The same adapter with a constant held-out evaluation (infinite loss: the curriculum
    rule never advances, so every mode trains on the same stage)."""
    return dataclasses.replace(
        adapter, evaluate=lambda policy, key, p: {"heldout_median_loss": jnp.float32(jnp.inf)})


def _median_time(run, reps: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds of ``run()`` (it must block on its result)."""
    walls, cpus = [], []
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        run()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def bench(setup: T.Setup, n_envs: int, k_steps: int, updates: int, reps: int) -> list[dict]:
    """Rows for one env count: fused, loop and loop-sync, plus the evaluation cost."""
    p = setup.params
    adapter = no_eval_adapter(setup.adapter)
    cfg = dataclasses.replace(setup.sac_cfg, n_envs=n_envs, updates_per_step=updates, n_evals=1,
                              buffer_capacity=max(setup.sac_cfg.buffer_capacity, n_envs))
    fused_tr = sac.make_trainer(dataclasses.replace(cfg, steps_per_eval=k_steps), adapter)
    step_tr = sac.make_trainer(dataclasses.replace(cfg, steps_per_eval=1), adapter)
    init = jax.jit(fused_tr.init)  # the runner layout does not depend on steps_per_eval
    fresh = lambda r: jax.block_until_ready(init(jax.random.PRNGKey(r), p))

    runner = fresh(0)
    fused, fused_compile_s, fused_peak = compile_jit(jax.jit(fused_tr.chunk, donate_argnums=0), runner, p)
    step, step_compile_s, step_peak = compile_jit(jax.jit(step_tr.chunk, donate_argnums=0), runner, p)

    def run_fused(r):
        jax.block_until_ready(fused(r, p))

    def run_loop(r, sync: bool):
        for _ in range(k_steps):
            r, metrics = step(r, p)
            if sync:  # read one step metric back, as a per-step logger would
                jax.device_get(jax.tree.leaves(metrics["steps"])[0])
        jax.block_until_ready(r)

    runs = {"fused": run_fused, "loop": lambda r: run_loop(r, False), "loop-sync": lambda r: run_loop(r, True)}
    rows = []
    for mode, fn in runs.items():
        fn(fresh(1))  # warm-up
        runners = [fresh(2 + i) for i in range(reps)]  # built outside the timed region
        it = iter(runners)
        wall_s, cpu_s = _median_time(lambda: fn(next(it)), reps)
        rows.append(dict(mode=mode, n_envs=n_envs, batch=n_envs, k_steps=k_steps, updates_per_step=updates,
                         compile_s=fused_compile_s if mode == "fused" else step_compile_s,
                         xla_peak_bytes=fused_peak if mode == "fused" else step_peak,
                         wall_s=wall_s, cpu_s=cpu_s, env_steps_per_s=n_envs * k_steps / wall_s,
                         updates_per_s=k_steps * updates / wall_s,
                         x_realtime=n_envs * k_steps * setup.cfg.duration_s / wall_s,
                         max_rss_mb=max_rss_mb(), load_avg=load_avg()))
        del runners
    # One real held-out evaluation of the greedy policy, apart.
    real = sac.make_trainer(cfg, setup.adapter)
    ev, eval_compile_s, _ = compile_jit(jax.jit(real.evaluate), fresh(0), p)
    r = fresh(0)
    ev_s, _ = _median_time(lambda: jax.block_until_ready(ev(r, p)), reps)
    for row in rows:
        row.update(eval_s=ev_s, eval_compile_s=eval_compile_s)
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| envs | mode | K steps x updates | compile (s) | wall (s) | CPU (s) | env steps/s | updates/s "
             "| fused speed-up | one eval (s) | load (1 min) |",
             "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    fused = {r["n_envs"]: r["wall_s"] for r in rows if r["mode"] == "fused"}
    for r in rows:
        speedup = r["wall_s"] / fused[r["n_envs"]] if r["n_envs"] in fused else float("nan")
        lines.append(f"| {r['n_envs']} | {r['mode']} | {r['k_steps']} x {r['updates_per_step']} "
                     f"| {r['compile_s']:.1f} | {r['wall_s']:.3f} | {r['cpu_s']:.3f} "
                     f"| {r['env_steps_per_s']:,.0f} | {r['updates_per_s']:,.1f} | {speedup:.2f}x "
                     f"| {r['eval_s']:.3f} | {r['load_avg'][0]:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--envs", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--steps", type=int, default=8, help="K env steps per timed run")
    ap.add_argument("--updates-per-step", type=int, default=16)
    ap.add_argument("--duration", type=float, default=0.15, help="clip seconds (sac_train's default)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke run: envs 8, K 2, 2 updates, 2 reps")
    ap.add_argument("--json", metavar="PATH", help="write setup and rows as JSON (after every env count)")
    ap.add_argument("--write-results", action="store_true",
                    help=f"write the table to the '{SECTION}' section of RESULTS.md")
    ap.add_argument("--results-md", default=RESULTS_MD, help="the RESULTS.md to write")
    a = ap.parse_args(argv)
    if a.quick:
        a.envs, a.steps, a.updates_per_step, a.reps = [8], 2, 2, 2
    if min(a.envs) < 1 or a.steps < 1 or a.reps < 1 or a.updates_per_step < 0:
        ap.error("--envs, --steps and --reps must be >= 1, --updates-per-step >= 0")

    meta = metadata(sys.argv[1:] if argv is None else argv, "benchmarks/train_throughput.py")
    t0 = time.perf_counter()
    setup = T.Setup(TrainConfig(envs=max(a.envs), total_steps=a.steps, chunk_steps=a.steps,
                                  updates_per_step=a.updates_per_step, bank_size=16, n_heldout=8,
                                  max_steps=4, duration_s=a.duration, shard=False))
    meta.update(setup_s=time.perf_counter() - t0, duration_s=a.duration, analysis="env.small_config",
                batch_size=setup.sac_cfg.batch_size, hidden=list(setup.sac_cfg.hidden))
    print(f"# {meta['device']}, jax {meta['jax']}, setup {meta['setup_s']:.1f} s, load {load_avg()}", flush=True)
    rows = []
    for n in a.envs:
        for row in bench(setup, n, a.steps, a.updates_per_step, a.reps):
            rows.append(row)
            print(f"{n:5d} envs {row['mode']:9s}: {row['wall_s']:8.3f} s  {row['env_steps_per_s']:9,.0f} env steps/s"
                  f"  compile {row['compile_s']:.1f} s  eval {row['eval_s']:.3f} s  load {row['load_avg'][0]}",
                  flush=True)
        if a.json:
            write_json(a.json, dict(setup=meta, rows=rows))

    text = (f"{SECTION}\n\nThe same training work -- K env steps of N envs, each followed by U SAC updates "
            f"(batch {meta['batch_size']}, MLP {meta['hidden']}; {a.duration} s clips, small analysis) -- as one "
            "jitted `lax.scan` (`fused`) vs a Python loop over the same jitted one-step chunk (`loop`: "
            "asynchronous dispatch; `loop-sync`: one metric read back per step). The held-out evaluation "
            "is stubbed out in all three so the ratio measures fusion alone; one real evaluation "
            "(8 held-out targets x 4 greedy edits) is timed apart. Speed-up = mode wall / fused wall "
            f"(> 1: fusion wins). Median of {a.reps} runs from fresh runners after a warm-up; compile apart.\n\n"
            + metadata_lines(meta, load_avg()) + "\n" + markdown_table(rows))
    print("\n" + text)
    if a.write_results:
        write_sections({SECTION: text}, a.results_md)
        print(f"\nwrote section '{SECTION}' to {a.results_md}")
    return dict(setup=meta, rows=rows)


if __name__ == "__main__":
    main()
