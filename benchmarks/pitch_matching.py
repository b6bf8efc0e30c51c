"""Per-target pitch of pitch-first matches on held-out presets, with and without the pitch term.

``python benchmarks/pitch_matching.py --matcher grad --n 16 --seed 0 [--pitch-weight 1.0] [--loud-starts]``
matches the stage-3 held-out presets of ``python -m agents.evaluate --stages 3 --n-heldout N
--budgets B --seed S`` with the same key (so the rows equal the harness's at pitch weight 0),
then prints, per target, the target's and the match's note-level f0 (``estimate_note``, the
harness's estimator), the error in cents, the render note, the loss without the pitch term, and
the second oscillator's, the noise's and the unison's settings of match and truth (the
parameters that move the heard pitch); and the summary: median |f0 error| over the pitched
targets, how many are more than 50 cents off, the median total / log-mel L1 / MR-STFT over all
targets and how many matches are more than 1 LU from the target's loudness, every one of them
computed WITHOUT the pitch term (``MatchConfig.pitch_weight`` = 0),
so that runs with and without it compare on the same loss. ``--pitch-weight`` overrides the
matcher's own pitch-term weight (``PitchFirstConfig.pitch_weight``; 0 = off). ``--json`` writes the figures,
``--npz`` the matches (for a look at single targets without matching again).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import zlib
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from agents.evaluation.harness import heldout_set, run_matcher  # noqa: E402
from agents.search.cmaes import cmaes_match  # noqa: E402
from agents.search.common import MatchConfig, evaluate_candidates, render_params  # noqa: E402
from agents.search.gradient import grad_match  # noqa: E402
from agents.search.pitch_first import PitchFirstConfig, pitch_first, pitch_term_weight  # noqa: E402
from agents.search.random_search import random_search  # noqa: E402
from benchmarks.common import load_avg, write_json  # noqa: E402
from jaxsynth import params as P  # noqa: E402
from jaxsynth import pitch as PP  # noqa: E402
from jaxsynth.synth import SynthConfig  # noqa: E402


def harness_key(seed: int, set_index: int, budget: int, matcher: str):
    """The key ``agents.evaluation.harness.run_evaluation`` gives this (set, budget, matcher)."""
    root = jax.random.key(seed)
    return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(root, set_index), budget),
                              zlib.crc32(matcher.encode()) & 0x7FFFFFFF)


def add_level_step_options(ap: argparse.ArgumentParser) -> None:
    """The level step's in-tune copies (``PitchFirstConfig.pitched_*``), shared with
    ``pitch_real_matching.py``."""
    ap.add_argument("--pitched-scales", default=None,
                    help="comma-separated PitchFirstConfig.pitched_scales ('' = none; default: the config's)")
    ap.add_argument("--pitched-slack", default=None,
                    help="PitchFirstConfig.pitched_slack: a float, or 'none' for no limit (default: the config's)")
    ap.add_argument("--no-pitched-floor", action="store_true",
                    help="the copies leave the first oscillator's level alone (PitchFirstConfig.pitched_floor=False)")


def level_step_config(pcfg: PitchFirstConfig, args) -> PitchFirstConfig:
    """``pcfg`` with the options of ``add_level_step_options`` applied."""
    if args.pitched_scales is not None:
        pcfg = replace(pcfg, pitched_scales=tuple(float(v) for v in args.pitched_scales.split(",") if v))
    if args.pitched_slack is not None:
        slack = args.pitched_slack.strip().lower()
        pcfg = replace(pcfg, pitched_slack=None if slack == "none" else float(slack))
    if args.no_pitched_floor:
        pcfg = replace(pcfg, pitched_floor=False)
    return pcfg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--matcher", default="grad", choices=("random", "cmaes", "grad"))
    ap.add_argument("--n", type=int, default=16, help="held-out stage-3 presets")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=int, default=256)
    ap.add_argument("--pitch-weight", type=float, default=None,
                    help="the pitch term's weight for pitched targets (default: the matcher's own, "
                         "pitch_first.pitch_term_weight)")
    ap.add_argument("--pitch-method", default="auto", choices=PP.METHODS)
    ap.add_argument("--loud-starts", action="store_true",
                    help="gradient starts uniform in every parameter (PitchFirstConfig.quiet_starts=(), "
                         "the behaviour before quiet starts)")
    ap.add_argument("--search-loudness", action="store_true",
                    help="pitched targets are searched with the loudness term (PitchFirstConfig."
                         "search_loudness, the behaviour before the search left it to the level step)")
    add_level_step_options(ap)
    ap.add_argument("--json", default=None)
    ap.add_argument("--npz", default=None,
                    help="also save the matches (best_params01, render notes) and the targets' true presets")
    args = ap.parse_args(argv)
    base = MatchConfig(synth=SynthConfig(duration_s=0.5))
    pcfg = PitchFirstConfig(method=args.pitch_method, pitch_weight=args.pitch_weight,
                            search_loudness=args.search_loudness)
    pcfg = level_step_config(pcfg, args)
    if args.loud_starts:
        pcfg = replace(pcfg, quiet_starts=())
    search = {"random": random_search, "cmaes": cmaes_match, "grad": grad_match}[args.matcher]
    weight = pitch_term_weight(search, pcfg, base)
    matcher = pitch_first(search, pcfg)  # as agents.evaluation.registry.build_matchers
    ts = heldout_set(3, args.n, args.seed, base)
    t0 = time.perf_counter()
    res = run_matcher(matcher, ts, args.budget, harness_key(args.seed, 0, args.budget, args.matcher),
                      base)
    seconds = time.perf_counter() - t0
    notes = np.asarray(res.render_note if res.render_note is not None else np.full(args.n, base.note), np.float32)
    terms = jax.device_get(evaluate_candidates(jnp.asarray(res.best_params01)[:, None], ts.features, base,
                                               jnp.asarray(notes)))
    total, log_mel, mrstft, loud = (np.asarray(x)[:, 0] for x in (terms.total, terms.log_mel_l1, terms.mrstft,
                                                                   terms.loudness_lu))
    audio, _ = render_params(res.best_params01, base, notes)
    ref = PP.estimate_note(ts.audio, base.synth.sample_rate, args.pitch_method).f0_hz
    got = PP.estimate_note(np.asarray(audio), base.synth.sample_rate, args.pitch_method).f0_hz
    known = np.isfinite(ref)
    err = np.abs(PP.cents_between(np.where(np.isfinite(got), got, 1.0), np.where(known, ref, 1.0)))
    err = np.where(np.isfinite(got), err, 1200.0)  # an unpitched match: wrong (as the harness)
    best, true = np.asarray(res.best_params01), np.asarray(ts.true_params01)
    cols = [P.INDEX[n] for n in ("osc2.level", "osc2.coarse_st", "noise.level", "unison.voices")]
    print("target  ref_hz  match_hz  err_c  note  total | osc2.level osc2.coarse noise.level unison.voices "
          "(match / truth, normalized)")
    for i in range(args.n):
        e = f"{err[i]:6.0f}" if known[i] else "     -"
        pairs = " ".join(f"{best[i, j]:.2f}/{true[i, j]:.2f}" for j in cols)
        print(f"{i:6d} {ref[i]:7.1f} {got[i]:9.1f} {e} {notes[i]:5.1f} {total[i]:6.3f} | {pairs}")
    summary = dict(matcher=args.matcher, n=args.n, seed=args.seed, budget=args.budget,
                   pitch_weight=weight, quiet_starts=list(pcfg.quiet_starts), search_loudness=pcfg.search_loudness,
                   pitched_scales=list(pcfg.pitched_scales), pitched_slack=pcfg.pitched_slack,
                   pitched_floor=pcfg.pitched_floor, pitched_targets=int(known.sum()),
                   f0_error_median_cents=float(np.median(err[known])) if known.any() else float("nan"),
                   f0_off_50c=int(np.sum(err[known] > 50.0)),
                   total_median=float(np.median(total)), log_mel_l1_median=float(np.median(log_mel)),
                   mrstft_median=float(np.median(mrstft)), loudness_over_1lu=int(np.sum(loud > 1.0)),
                   total_mean_pitched=float(np.mean(total[known])) if known.any() else float("nan"),
                   seconds=round(seconds, 1), load=load_avg(), jax=jax.__version__,
                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in summary.items()})
    if args.json:
        write_json(args.json, summary)
    if args.npz:
        np.savez(args.npz, best_params01=best, render_note=notes, true_params01=true, ref_f0_hz=ref,
                 match_f0_hz=got, total=total)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
