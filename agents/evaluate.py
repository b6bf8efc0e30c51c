"""``python -m agents.evaluate --stages 0 3 --budgets 32 256 2048 --out DIR [--policy RUN_DIR]
[--wav-dir DIR]``: every matcher on held-out presets (and optionally a folder of audio files)
at equal render budgets; writes ``evaluation.md`` and ``evaluation.json`` to DIR
(``agents.evaluation.harness``)."""

from __future__ import annotations

import argparse
import os
import sys

from agents import curriculum as C
from agents.evaluation.harness import (
    EvalConfig,
    run_evaluation,
    to_markdown,
    write_outputs,
)
from jaxsynth.io import check_output_dir


def policy_rows(run_dir: str) -> list[str]:
    """The default learned-matcher rows of a run directory: the amortized ones where it holds an
    amortized network, the SAC ones where it holds SAC checkpoints (or nothing recognisable)."""
    from agents.evaluation.registry import AMORTIZED_MATCHERS  # noqa: PLC0415
    from agents.sac.amortized import is_amortized_run  # noqa: PLC0415

    amortized = is_amortized_run(run_dir)
    sac = not amortized or os.path.isdir(os.path.join(run_dir, "checkpoints"))
    return (list(AMORTIZED_MATCHERS) if amortized else []) + (["sac", "sac+cmaes"] if sac else [])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agents.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stages", type=int, nargs="+", default=[0, C.N_STAGES - 1])
    ap.add_argument("--n-heldout", type=int, default=8)
    ap.add_argument("--budgets", type=int, nargs="+", default=[32, 256, 2048])
    ap.add_argument("--matchers", nargs="+", default=None,
                    help="default: random cmaes grad (+ sac sac+cmaes, or amortized amortized+level "
                         "amortized+cmaes, with --policy)")
    ap.add_argument("--policy", default=None, metavar="RUN_DIR",
                    help="a trained `python -m agents.sac_train --out RUN_DIR` (adds rows sac, sac+cmaes; a run "
                         "trained with --amortized starts from the guess and adds the amortized rows) or "
                         "`python -m agents.amortized_train --out RUN_DIR` (adds the amortized rows)")
    ap.add_argument("--policy-mode", choices=("greedy", "sample"), default="greedy",
                    help="the policy's first episode: greedy or sampled actions (later episodes sample)")
    ap.add_argument("--no-pitch", action="store_true", help="leave out the CREPE pitch-error column")
    ap.add_argument("--wav-dir", default=None,
                    help="audio files; a notes.csv (file, f0_hz or midi_note) or m<MIDI> in the name gives the played note")
    ap.add_argument("--no-pitch-first", action="store_true",
                    help="search matchers search the tune like any parameter (the old behaviour)")
    ap.add_argument("--pitch-method", choices=("auto", "yin", "crepe"), default="auto",
                    help="f0 estimator for pitch-first matching and the f0 columns (auto: CREPE tiny if installed)")
    ap.add_argument("--duration-s", type=float, default=0.5)
    ap.add_argument("--out", required=True, help="output folder for evaluation.md/.json")
    a = ap.parse_args(argv)
    from agents.sac.checkpoint import CheckpointError
    matchers = a.matchers or (["random", "cmaes", "grad"] + (policy_rows(a.policy) if a.policy else []))
    try:
        check_output_dir(a.out)
        ec = EvalConfig(seed=a.seed, stages=tuple(a.stages), n_heldout=a.n_heldout,
                        budgets=tuple(a.budgets), matchers=tuple(matchers), wav_dir=a.wav_dir,
                        duration_s=a.duration_s, out_dir=a.out, policy=a.policy,
                        policy_mode=a.policy_mode, pitch=not a.no_pitch,
                        pitch_first=not a.no_pitch_first, pitch_method=a.pitch_method)
        rows = run_evaluation(ec)
    except (ValueError, FileNotFoundError, CheckpointError) as e:  # AudioFileError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    md, js = write_outputs(rows, ec, a.out)
    print(to_markdown(rows))
    print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
