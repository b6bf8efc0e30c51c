"""How to split a budget between the learned matcher and CMA-ES (``sac+cmaes``).

``python benchmarks/learned_refine.py --policy RUN_DIR --seed 1 --n 32 --budget 256
--splits 64:0.15 32:0.08 32:0.08:hold --json OUT.json``

The harness's ``sac+cmaes`` gives the policy (amortized guess, then edits) a quarter of the
budget and hands its best preset to CMA-ES for the rest (step size ``registry.LEARNED_SIGMA``
in normalized units, the pitch held; chosen with this script: before, 0.15 and the pitch
free), then corrects level and pitch. Each ``FIRST:SIGMA[:hold]`` here is that matcher with the
policy's share fixed at FIRST renders, CMA-ES's step size SIGMA and, with ``hold``, CMA-ES
holding the policy's pitch (``then_cmaes(hold_pitch=True)``), on the held-out presets of
stage ``--stage`` drawn with ``--seed``: choose the split on one seed's presets and report it
on another's, so the choice is not fitted to the presets it is judged on. Prints one row per
split (median total [IQR], log-mel L1 dB, f0 share > 50 c off) and writes them to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from agents.evaluation import harness as H  # noqa: E402
from agents.evaluation import registry as R  # noqa: E402
from agents.search.common import MatchConfig  # noqa: E402
from benchmarks.common import load_avg  # noqa: E402
from jaxsynth.synth import SynthConfig  # noqa: E402


def split_matcher(policy_run: str, first: int, sigma: float, hold_pitch: bool) -> R.Matcher:
    """``sac+cmaes`` with the policy's renders fixed at ``first``, CMA-ES's step size ``sigma``
    and its pitch held or not; the policy and its guess as ``build_matchers`` loads them."""
    from agents.sac.policy import load_policy  # noqa: PLC0415 (loads orbax state)

    sac = R.learned_policy(load_policy(policy_run, 0))
    return R.then_level(R.then_cmaes(sac, sigma0=sigma, first_budget=first, hold_pitch=hold_pitch),
                        first_budget=None)


def parse_split(text: str) -> tuple[int, float, bool]:
    """FIRST:SIGMA or FIRST:SIGMA:hold."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "hold"):
        raise argparse.ArgumentTypeError(f"a split is FIRST:SIGMA or FIRST:SIGMA:hold, got {text!r}")
    return int(parts[0]), float(parts[1]), len(parts) == 3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policy", required=True, help="a `python -m agents.sac_train` run directory")
    ap.add_argument("--seed", type=int, default=1, help="held-out presets and keys (the harness's 0 is the judged set)")
    ap.add_argument("--stage", type=int, default=3)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--budget", type=int, default=256)
    ap.add_argument("--splits", type=parse_split, nargs="+", default=[(64, 0.15, False), (32, 0.08, False), (32, 0.08, True)],
                    help="FIRST:SIGMA[:hold] (policy renders : CMA-ES step size [: CMA-ES holds the pitch])")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    cfg = MatchConfig(synth=SynthConfig(duration_s=0.5))
    ts = H.heldout_set(args.stage, args.n, args.seed, cfg)
    key = jax.random.key(args.seed)
    rows = []
    for first, sigma, hold in args.splits:
        name = f"sac{first}+cmaes(sigma {sigma}{', pitch held' if hold else ''})"
        t0 = time.perf_counter()
        row = H.evaluate_set(ts, name, args.budget, key, cfg, pitch=False,
                             matchers={name: split_matcher(args.policy, first, sigma, hold)})
        row["seconds"] = round(time.perf_counter() - t0, 1)
        row["load"] = load_avg()
        rows.append(row)
        tot, mel = row["total"], row["log_mel_l1"]
        print(f"{name:28s} total {tot['median']:.3f} [{tot['iqr']:.3f}]  log-mel {mel['median']:.2f} dB  "
              f"f0 >50c off {100 * row.get('f0_off_50c', np.nan):.0f} % of {row.get('f0_targets', 0)}  "
              f"{row['seconds']:.0f} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "splits"},
                       "splits": args.splits, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
