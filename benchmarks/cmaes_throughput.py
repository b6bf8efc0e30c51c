"""CMA-ES matching throughput: evaluations (render + analysis + loss of one candidate) per
second, by population size and number of targets matched at once, plus (``--grad-cost``) the
cost of one gradient step of ``agents.matchers.grad_match`` in forward evaluations.

Each configuration runs ``cmaes_match`` once to compile (reported as the first-call time) and
then ``--repeats`` times; the table gives the median of the timed runs. Stage-0 targets
(held-out presets, 9 free parameters). Prints a Markdown table; timings on a shared machine
are disturbed by other jobs: the load average is printed next to them.

    python benchmarks/cmaes_throughput.py [--populations 8 16 32] [--targets 1 4 16]
        [--generations 8] [--duration-s 0.5] [--grad-cost | --grad-only]
        [--grad-shapes 8x4 16x4] [--grad-stages 0 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agents import curriculum as C  # noqa: E402
from agents.search.cmaes import cmaes_match
from agents.search.common import MatchConfig, target_features_of_params
from jaxsynth import params as P
from benchmarks.common import load_avg  # noqa: E402
from jaxsynth.synth import SynthConfig  # noqa: E402


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


def grad_cost(targets: int, candidates: int, repeats: int, cfg, stage: int = 0) -> dict:
    """Cost of one ``grad_match`` step (``grad_step``: value_and_grad + Adam over
    ``targets x candidates`` starts) in forward evaluations of the same batch
    (``evaluate_candidates``, what CMA-ES and random search pay). The two are timed in
    alternation, ``repeats`` pairs after a compile call each, so that load drift on a shared
    machine hits both alike; wall and process CPU time (all threads) are both reported, and the
    ratio is the median of the per-pair ratios."""
    import optax
    from agents.search.common import evaluate_candidates, free_indices
    from agents.search.gradient import grad_step
    free_idx = free_indices(C.stage_module_masks()[stage])
    base01 = jnp.asarray(P.DEFAULT_PARAMS01, jnp.float32)
    x = jnp.asarray(C.heldout_presets(1, stage, targets * candidates)).reshape(targets, candidates, -1)
    tf = target_features_of_params(C.heldout_presets(2, stage, targets), cfg)
    xf = x[..., jnp.asarray(free_idx)]
    opt = optax.adam(0.05).init(xf)
    fwd = lambda: evaluate_candidates(x, tf, cfg).total
    step = lambda: grad_step(xf, opt, tf, base01, cfg, free_idx, 0.05)[0]
    jax.block_until_ready(fwd())
    jax.block_until_ready(step())
    wall, cpu = {"fwd": [], "step": []}, {"fwd": [], "step": []}
    for _ in range(repeats):
        for name, fn in (("fwd", fwd), ("step", step)):
            w0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn())
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    med = lambda v: float(np.median(v))
    return dict(fwd_wall=med(wall["fwd"]), step_wall=med(wall["step"]),
                ratio_wall=med(np.divide(wall["step"], wall["fwd"])),
                fwd_cpu=med(cpu["fwd"]), step_cpu=med(cpu["step"]),
                ratio_cpu=med(np.divide(cpu["step"], cpu["fwd"])))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--populations", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--targets", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--duration-s", type=float, default=0.5)
    ap.add_argument("--grad-cost", action="store_true")
    ap.add_argument("--grad-only", action="store_true", help="only the gradient-step cost")
    ap.add_argument("--grad-shapes", nargs="+", default=["8x4", "16x4"],
                    help="TARGETSxSTARTS batches of the gradient-step cost (the harness runs 8x4)")
    ap.add_argument("--grad-stages", type=int, nargs="+", default=[0, 3])
    a = ap.parse_args(argv)
    cfg = MatchConfig(synth=SynthConfig(duration_s=a.duration_s))
    print(f"- machine: {platform.machine()} {jax.default_backend()}, {os.cpu_count()} cores; "
          f"jax {jax.__version__}; load avg before: {load_avg()}")
    print(f"- {a.duration_s} s clips at {cfg.synth.sample_rate} Hz, stage 0 (9 free params), "
          f"{a.generations} generations per run, median of {a.repeats} runs after a compile run\n")
    if not a.grad_only:
        print("| population | targets | evals/run | first call (s) | run (s) | evals/s |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for p, t, e, first, run, rate in cmaes_rows(a.populations, a.targets, a.generations,
                                                   a.repeats, cfg):
            print(f"| {p} | {t} | {e} | {first:.1f} | {run:.2f} | {rate:,.0f} |", flush=True)
    if a.grad_cost or a.grad_only:
        print(f"\ngradient step (grad_match's grad_step) vs forward evaluation of the same batch, "
              f"{a.repeats} alternating pairs, medians:\n")
        print("| stage | targets x starts | forward wall (ms) | step wall (ms) | ratio wall "
              "| forward CPU (ms) | step CPU (ms) | ratio CPU |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for stage in a.grad_stages:
            for shape in a.grad_shapes:
                t, c = (int(v) for v in shape.lower().split("x"))
                r = grad_cost(t, c, a.repeats, cfg, stage)
                print(f"| {stage} | {t} x {c} | {r['fwd_wall'] * 1e3:.0f} | {r['step_wall'] * 1e3:.0f} "
                      f"| {r['ratio_wall']:.2f} | {r['fwd_cpu'] * 1e3:.0f} | {r['step_cpu'] * 1e3:.0f} "
                      f"| {r['ratio_cpu']:.2f} |", flush=True)
    print(f"\n- load avg after: {load_avg()}")


if __name__ == "__main__":
    main()
