"""Cost per env step of fresh training targets (a new target per env and episode, rendered
inside the compiled chunk) against the fixed target bank, SAC updates off so only the env
side is timed.

    python benchmarks/fresh_target_cost.py [--envs 256] [--max-steps 4] [--reps 3]

Each mode's chunk (one episode of ``--max-steps`` steps of all envs) is compiled, then the
modes alternate ``--reps`` times; wall and process CPU seconds per chunk are printed with the
cost per env step (per env). Process CPU time is the figure to trust on a shared machine.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from agents.sac.config import TrainConfig
from agents.sac.run import Setup


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--envs", type=int, default=256)
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--full-analysis", action="store_true", help="0.5 s clips, 64-mel analysis")
    a = ap.parse_args(argv)
    setups, runners = {}, {}
    for mode in ("bank", "fresh"):
        kw = dict(duration_s=0.5, full_analysis=True) if a.full_analysis else {}
        cfg = TrainConfig(envs=a.envs, total_steps=a.max_steps, chunk_steps=a.max_steps,
                          max_steps=a.max_steps, updates_per_step=0, fresh_targets=mode == "fresh",
                          n_heldout=1, shard=False, **kw)
        s = Setup(cfg)
        r = s.init(s.keys, s.params)
        t0 = time.time()
        r, _ = s.chunk(r, s.params)
        jax.block_until_ready(r)
        print(f"{mode}: first chunk (compile + run) {time.time() - t0:.1f} s", flush=True)
        setups[mode], runners[mode] = s, r
    times = {m: [] for m in setups}
    for _ in range(a.reps):
        for m, s in setups.items():
            w0, c0 = time.time(), time.process_time()
            runners[m], _ = s.chunk(runners[m], s.params)
            jax.block_until_ready(runners[m])
            times[m].append((time.time() - w0, time.process_time() - c0))
    steps = a.max_steps * a.envs
    for m, t in times.items():
        w, c = np.median(np.array(t), axis=0)
        print(f"{mode_name(m)}: chunk wall {w:.2f} s, CPU {c:.2f} s (median of {a.reps}); per env step "
              f"{1e3 * w / steps:.3f} ms wall, {1e3 * c / steps:.3f} ms CPU", flush=True)
    wb, cb = np.median(np.array(times["bank"]), axis=0)
    wf, cf = np.median(np.array(times["fresh"]), axis=0)
    print(f"fresh / bank: wall {wf / wb:.2f}x, CPU {cf / cb:.2f}x "
          f"({a.envs} envs, {a.max_steps}-step episodes, {'full' if a.full_analysis else 'small'} analysis)")


def mode_name(m: str) -> str:
    return {"bank": "fixed bank", "fresh": "fresh targets"}[m]


if __name__ == "__main__":
    main()
