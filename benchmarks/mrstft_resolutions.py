"""Which MR-STFT resolutions the matching loss needs: search with fewer, judge with all four.

``python benchmarks/mrstft_resolutions.py --n 64 --seed 0 --budget 256
--sizes 256,512,1024,2048 512,1024,2048 256,512,1024 --json OUT.json``

The environment step's analysis is mostly its MR-STFT FFTs (benchmarks/RESULTS.md,
"Environment step and render, third pass"): three resolutions instead of four would cut the
step by a fifth. That is only worth it if matching with the cheaper loss finds presets as good.
Here pitch-first CMA-ES matches the same held-out presets with the loss over each set of FFT
sizes (everything else the default analysis), and every match is then judged by the loss
over ``--judge-sizes`` (default all four, 256-2,048: the default loss when this study was run,
and the strictest judge of a set without 256), its log-mel L1 (dB) and its f0 error (CREPE tiny
where installed, else YIN), so the rows are comparable. Its result set the default loss to
512/1024/2048. Prints one row per set; ``--json`` writes
them with the per-target figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from agents.evaluation.harness import f0_error_cents, heldout_set, run_matcher  # noqa: E402
from agents.search.cmaes import cmaes_match  # noqa: E402
from agents.search.common import MatchConfig, render_params  # noqa: E402
from agents.search.pitch_first import PitchFirstConfig, pitch_first  # noqa: E402
from benchmarks.common import load_avg, write_json  # noqa: E402
from jaxsynth.features import FeatureConfig  # noqa: E402
from jaxsynth.losses import matching_loss  # noqa: E402
from jaxsynth.pitch import estimate_note  # noqa: E402
from jaxsynth.synth import SynthConfig  # noqa: E402


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"FFT sizes are comma-separated integers, got {text!r}") from None
    if not sizes or any(s < 64 or s & (s - 1) for s in sizes):
        raise argparse.ArgumentTypeError(f"FFT sizes must be powers of two >= 64, got {text!r}")
    return sizes


def search_config(judge: MatchConfig, sizes: tuple[int, ...]) -> MatchConfig:
    """``judge``'s config with the loss over ``sizes`` only."""
    fc = judge.features
    return replace(judge, features_override=FeatureConfig(
        sample_rate=fc.sample_rate, duration_s=fc.duration_s, mrstft_fft_sizes=sizes))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage", type=int, default=3)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=int, default=256)
    ap.add_argument("--sizes", type=parse_sizes, nargs="+",
                    default=[(256, 512, 1024, 2048), (512, 1024, 2048), (256, 512, 1024)])
    ap.add_argument("--judge-sizes", type=parse_sizes, default=(256, 512, 1024, 2048),
                    help="FFT sizes of the loss every match is judged by")
    ap.add_argument("--pitch-method", default="auto", choices=["auto", "yin", "crepe"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    judge = search_config(MatchConfig(synth=SynthConfig(duration_s=0.5)), args.judge_sizes)
    ts_judge = heldout_set(args.stage, args.n, args.seed, judge)
    ref_f0 = estimate_note(ts_judge.audio, judge.synth.sample_rate, args.pitch_method).f0_hz
    matcher = pitch_first(cmaes_match, PitchFirstConfig(method=args.pitch_method))
    rows = []
    for sizes in args.sizes:
        cfg = search_config(judge, sizes)
        ts = heldout_set(args.stage, args.n, args.seed, cfg)  # the same presets, analysed with `sizes`
        t0 = time.perf_counter()
        res = run_matcher(matcher, ts, args.budget, jax.random.key(args.seed), cfg)
        seconds = time.perf_counter() - t0
        audio, feats = render_params(res.best_params01, judge, res.render_note)
        terms = jax.device_get(matching_loss(feats, ts_judge.features, judge.weights))
        err = f0_error_cents(audio, ref_f0, judge.synth.sample_rate, args.pitch_method)
        known = np.isfinite(err)
        row = {"sizes": list(sizes), "total": np.asarray(terms.total).tolist(),
               "log_mel_l1": np.asarray(terms.log_mel_l1).tolist(), "f0_error_cents": err.tolist(),
               "median_total": float(np.median(terms.total)),
               "iqr_total": float(np.subtract(*np.percentile(terms.total, [75, 25]))),
               "median_log_mel_l1": float(np.median(terms.log_mel_l1)),
               "median_f0_error_cents": float(np.median(err[known])) if known.any() else float("nan"),
               "f0_off_50c": int((err[known] > 50.0).sum()), "f0_targets": int(known.sum()),
               "seconds": round(seconds, 1), "load": load_avg()}
        rows.append(row)
        print(f"sizes {','.join(map(str, sizes)):22s} judged total {row['median_total']:.3f} "
              f"[{row['iqr_total']:.3f}]  log-mel {row['median_log_mel_l1']:.2f} dB  f0 median "
              f"{row['median_f0_error_cents']:.1f} c, >50c off {row['f0_off_50c']} of {row['f0_targets']}  "
              f"{seconds:.0f} s", flush=True)
    if len(rows) > 1:  # paired: the same presets under each set of sizes
        base = np.asarray(rows[0]["total"])
        for row in rows[1:]:
            d = np.asarray(row["total"]) - base
            print(f"{','.join(map(str, row['sizes']))} vs {','.join(map(str, rows[0]['sizes']))}: total "
                  f"difference median {np.median(d):+.3f}, lower on {(d < 0).sum()} of {len(d)}")
    if args.json:
        write_json(args.json, {"args": {k: v for k, v in vars(args).items() if k != "sizes"}, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
