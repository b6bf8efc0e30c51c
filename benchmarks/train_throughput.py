"""SAC training throughput: env-steps/s (transitions/s) and updates/s at several env counts,
fused (the whole run one jitted scan, ``sac.make_train``) vs a host Python loop over the same
jitted chunk of ONE env step (``trainer.chunk`` with ``steps_per_eval=1``).

    PYTHONPATH=. python benchmarks/train_throughput.py --envs 64 256 1024 4096 --steps 4

Compile time is reported separately (first call); timings are of a second call. Record the
machine load (``uptime``) next to any figure: on a shared machine the numbers move a lot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import numpy as np

from agents import sac
from agents import sac_train as T


def bench(envs: int, steps: int, updates: int, duration_s: float) -> dict:
    base = T.TrainConfig(envs=envs, total_steps=steps, chunk_steps=steps, updates_per_step=updates,
                         bank_size=16, n_heldout=8, max_steps=4, duration_s=duration_s, shard=False)
    setup = T.Setup(base)
    p = setup.params
    out = {"envs": envs, "steps": steps, "updates_per_step": updates}
    # Fused: one scan over `steps` env steps (+ updates) and one evaluation.
    train = jax.jit(sac.make_train(setup.sac_cfg, setup.adapter, p))
    t = time.time(); jax.block_until_ready(train(jax.random.PRNGKey(0), p)); out["fused_compile_plus_run_s"] = time.time() - t
    t = time.time(); jax.block_until_ready(train(jax.random.PRNGKey(1), p)); dt = time.time() - t
    out["fused_env_steps_per_s"] = steps * envs / dt
    out["fused_updates_per_s"] = steps * updates / dt
    # Host loop: the same work as `steps` calls of a one-step chunk (each also evaluates, as the
    # fused run does once; the difference is the fusion + per-call dispatch and eval overhead).
    cfg1 = T.TrainConfig(**{**base.__dict__, "total_steps": 1, "chunk_steps": 1})
    tr1 = sac.make_trainer(cfg1.sac_config(), setup.adapter)
    init, chunk = jax.jit(tr1.init), jax.jit(tr1.chunk)
    r = jax.block_until_ready(init(jax.random.PRNGKey(0), p))
    t = time.time(); r, _ = jax.block_until_ready(chunk(r, p)); out["loop_compile_plus_step_s"] = time.time() - t
    t = time.time()
    for _ in range(steps):
        r, _ = chunk(r, p)
    jax.block_until_ready(r)
    dt = time.time() - t
    out["loop_env_steps_per_s"] = steps * envs / dt
    out["loop_updates_per_s"] = steps * updates / dt
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", type=int, nargs="+", default=[64, 256, 1024, 4096])
    ap.add_argument("--steps", type=int, default=4, help="env steps per timed run")
    ap.add_argument("--updates-per-step", type=int, default=16)
    ap.add_argument("--duration", type=float, default=0.15)
    ap.add_argument("--json", default="", help="also write results to this JSON file")
    a = ap.parse_args()
    rows = []
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {platform.processor() or platform.machine()}, "
          f"load avg {os.getloadavg()}")
    for n in a.envs:
        row = bench(n, a.steps, a.updates_per_step, a.duration)
        row["loadavg_1min"] = os.getloadavg()[0]
        rows.append(row)
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
