"""CMA-ES matching throughput: evaluations (render + analysis + loss of one candidate) per
second, by population size and number of targets matched at once, plus (``--grad-cost``) the
cost of one gradient step of ``agents.matchers.grad_match`` in forward evaluations.

Each configuration runs ``cmaes_match`` once to compile (reported as the first-call time) and
then ``--repeats`` times; the table gives the median of the timed runs. Stage-0 targets
(held-out presets, 9 free parameters). Prints a Markdown table; timings on a shared machine
are disturbed by other jobs: the load average is printed next to them.

    python benchmarks/cmaes_throughput.py [--populations 8 16 32] [--targets 1 4 16]
        [--generations 8] [--duration-s 0.5] [--grad-cost]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from agents import curriculum as C
from agents.cmaes import cmaes_match
from agents.matchers import MatchConfig, candidate_losses, target_features_of_params
from jaxsynth import params as P
from jaxsynth.synth import SynthConfig


def _time(fn, repeats: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t0)
    return first, float(np.median(ts))


def cmaes_rows(populations, targets, generations, repeats, cfg):
    mask = C.stage_module_masks()[0]
    rows = []
    for t in targets:
        tf = target_features_of_params(C.heldout_presets(0, 0, t), cfg)
        for p in populations:
            fn = lambda: cmaes_match(jax.random.key(0), tf, mask, p * generations, cfg,
                                     population=p).best_loss
            first, run = _time(fn, repeats)
            evals = t * p * generations
            rows.append((p, t, evals, first, run, evals / run))
    return rows


def grad_cost(batch: int, repeats: int, cfg) -> tuple[float, float, float]:
    """(forward s, value_and_grad s, ratio) of the matching loss over ``batch`` candidates."""
    x = jnp.asarray(C.heldout_presets(1, 0, batch))[None]
    tf = target_features_of_params(C.heldout_presets(2, 0, 1), cfg)
    fwd = jax.jit(lambda x: candidate_losses(x, tf, cfg).total)
    vg = jax.jit(jax.value_and_grad(lambda x: jnp.sum(candidate_losses(x, tf, cfg).total)))
    _, f = _time(lambda: fwd(x), repeats)
    _, g = _time(lambda: vg(x), repeats)
    return f, g, g / f


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--populations", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--targets", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--duration-s", type=float, default=0.5)
    ap.add_argument("--grad-cost", action="store_true")
    a = ap.parse_args(argv)
    cfg = MatchConfig(synth=SynthConfig(duration_s=a.duration_s))
    print(f"- machine: {platform.machine()} {jax.default_backend()}, {os.cpu_count()} cores; "
          f"jax {jax.__version__}; load avg before: {os.getloadavg()}")
    print(f"- {a.duration_s} s clips at {cfg.synth.sample_rate} Hz, stage 0 (9 free params), "
          f"{a.generations} generations per run, median of {a.repeats} runs after a compile run\n")
    print("| population | targets | evals/run | first call (s) | run (s) | evals/s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for p, t, e, first, run, rate in cmaes_rows(a.populations, a.targets, a.generations,
                                               a.repeats, cfg):
        print(f"| {p} | {t} | {e} | {first:.1f} | {run:.2f} | {rate:,.0f} |", flush=True)
    if a.grad_cost:
        f, g, r = grad_cost(16, a.repeats, cfg)
        print(f"\ngradient step cost (16 candidates): forward {f * 1e3:.0f} ms, value_and_grad "
              f"{g * 1e3:.0f} ms, ratio {r:.2f}")
    print(f"\n- load avg after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
