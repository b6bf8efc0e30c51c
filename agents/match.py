"""``python -m agents.match TARGET.wav [--method cmaes|grad|random|sac|sac+cmaes] [--policy RUN_DIR]
[--budget N] --out DIR``

Match one audio file (any WAV/FLAC/OGG: resampled and mixed to mono by ``jaxsynth.io``; its
first ``duration_s`` are matched) and write to DIR:

* ``preset.json``: the matched preset in physical units (``jaxsynth.params.save_preset``),
* ``match.wav``: the preset rendered (``jaxsynth.io.save_audio``),
* ``ab.png``: target vs match log-mel spectrograms and the loss terms,
* ``match.json``: method, budget, loss terms, the best-so-far trajectory.

DIR is checked for writing before any work; nothing is written before the match succeeded,
then each file is replaced atomically. A bad input file or an unwritable DIR gets one line
and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from agents import curriculum as C
from agents.evaluation.match_file import METHODS, MatchJob, match_file, write_outputs
from agents.sac.checkpoint import CheckpointError
from jaxsynth.io import AudioFileError, check_output_dir


def renders_spent(trace_renders, job: MatchJob) -> str:
    """'N renders', and why when N is below the budget: matchers render in whole batches (a
    CMA-ES generation is its whole population), and a rest smaller than a batch is not spent."""
    spent = int(trace_renders[-1])
    if spent >= job.budget:
        return f"{spent} renders"
    steps = {int(d) for d in np.diff(np.asarray(trace_renders))} or {spent}
    unit = (f"whole batches of {steps.pop()} renders" if len(steps) == 1
            else "whole batches")
    what = " (one CMA-ES generation each)" if job.method == "cmaes" else ""
    return (f"{spent} of the {job.budget} budgeted renders: {job.method} renders in {unit}{what}, "
            f"and the remaining {job.budget - spent} do not make another")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agents.match", description=__doc__.split("\n\n")[1])
    ap.add_argument("target", help="audio file to match (WAV/FLAC/OGG)")
    ap.add_argument("--method", choices=METHODS, default="cmaes")
    ap.add_argument("--budget", type=int, default=512, help="renders (default 512)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stage", type=int, default=C.N_STAGES - 1,
                    help="curriculum stage whose modules may change (default: all modules)")
    ap.add_argument("--duration-s", type=float, default=0.5)
    ap.add_argument("--policy", default=None, metavar="RUN_DIR",
                    help="trained policy for --method sac/sac+cmaes (the --out of agents.sac_train) or "
                         "amortized/amortized+level/amortized+cmaes (the --out of agents.amortized_train)")
    ap.add_argument("--policy-mode", choices=("greedy", "sample"), default="greedy")
    ap.add_argument("--no-pitch-first", action="store_true",
                    help="search the tune like any parameter (default: estimate the f0 first)")
    ap.add_argument("--pitch-method", choices=("auto", "yin", "crepe"), default="auto",
                    help="f0 estimator: CREPE tiny if installed, else pure-JAX YIN (auto)")
    ap.add_argument("--out", required=True, help="output folder")
    a = ap.parse_args(argv)
    job = MatchJob(a.target, a.out, a.method, a.budget, a.seed, a.stage, a.duration_s, a.policy,
                   a.policy_mode, not a.no_pitch_first, a.pitch_method)
    try:
        if not 0 <= job.stage < C.N_STAGES:
            raise ValueError(f"--stage must be in [0, {C.N_STAGES - 1}], got {job.stage}")
        if job.budget < 1:
            raise ValueError(f"--budget must be >= 1, got {job.budget}")
        check_output_dir(job.out_dir)
        best, res, rendered, target = match_file(job)
        files = write_outputs(job, best, res, rendered, target)
    except (AudioFileError, ValueError, CheckpointError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"loss {float(res.best_loss[0]):.4f} after {renders_spent(res.trace_renders, job)}")
    for f in files:
        print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
