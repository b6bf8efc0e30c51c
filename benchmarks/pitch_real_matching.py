"""Per-note pitch of pitch-first matches of real recorded notes, against the played note.

``python benchmarks/pitch_real_matching.py --notes runs/real_notes --matcher cmaes --budget 256
[--files LIST] [--sample N] [--csv OUT.csv]`` matches the notes of a set written by
``benchmarks/make_real_notes.py`` (all of them, the files named in ``--files`` (one name a
line), and/or ``--sample`` more drawn at random with ``--sample-seed``) with the pitch-first
matcher of ``agents.evaluation.registry.build_matchers`` (as ``python -m agents.evaluate
--wav-dir``; ``--search-loudness``, ``--pitched-scales``, ``--pitched-slack`` and ``--no-pitched-floor``
change its ``PitchFirstConfig``), in batches of ``--batch`` notes (the harness holds every target of a call in one
batch; 594 notes asked for 28 GB), and writes one CSV row per note: instrument, family,
soundfont, split, the played note's f0, the target's note-level f0 (``estimate_note``, the
harness's estimator) and the match's, both errors against the played note in cents (an
unpitched reading counts as 1,200, as in the harness), the render note, and the match's total
loss and log-mel L1 (dB). It prints the share more than 50 cents off for the estimator and the
matches, and which notes miss on which side. Every batch uses the harness's key for a WAV set
after one held-out stage (``--stages 3 --n-heldout 1``), so a batch's figures are paired
between two versions of the code on the same notes. ``--breakdown A.csv [B.csv]`` matches
nothing and prints, per instrument, soundfont and octave, how many notes are off for the
estimator and for each CSV's matches, and the notes that are off in one of A and B only.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from make_real_notes import read_notes_csv  # noqa: E402
from pitch_matching import add_level_step_options, harness_key, level_step_config  # noqa: E402

from agents.evaluation.harness import cents_off, run_matcher, wav_set  # noqa: E402
from agents.search.cmaes import cmaes_match  # noqa: E402
from agents.search.common import MatchConfig, render_params  # noqa: E402
from agents.search.gradient import grad_match  # noqa: E402
from agents.search.pitch_first import PitchFirstConfig, pitch_first  # noqa: E402
from agents.search.random_search import random_search  # noqa: E402
from benchmarks.common import load_avg, write_json  # noqa: E402
from jaxsynth import pitch as PP  # noqa: E402
from jaxsynth.synth import SynthConfig  # noqa: E402

OFF_CENTS = 50.0


errors_cents = cents_off  # |cents| from the played note; an unpitched reading counts 1,200


def choose_files(rows: list[dict], listed: list[str], sample: int, seed: int) -> list[str]:
    """The listed files, then ``sample`` others drawn without replacement (sorted by name)."""
    names = [r["file"] for r in rows]
    unknown = sorted(set(listed) - set(names))
    if unknown:
        raise ValueError(f"not in notes.csv: {unknown[:5]}")
    if not listed and not sample:
        return sorted(names)
    rest = sorted(set(names) - set(listed))
    rng = np.random.default_rng(seed)
    extra = list(rng.choice(rest, size=min(sample, len(rest)), replace=False)) if sample else []
    return sorted(set(listed) | set(extra))


def link_subset(folder: str, files: list[str], rows: list[dict], out: str) -> str:
    """A folder of symlinks to ``files`` with their rows of notes.csv (what ``wav_set`` reads)."""
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):
        os.remove(os.path.join(out, f))
    for f in files:
        os.symlink(os.path.abspath(os.path.join(folder, f)), os.path.join(out, f))
    keep = set(files)
    with open(os.path.join(folder, "notes.csv"), newline="") as fh:
        reader = csv.DictReader(fh)
        with open(os.path.join(out, "notes.csv"), "w", newline="") as oh:
            w = csv.DictWriter(oh, fieldnames=reader.fieldnames)
            w.writeheader()
            w.writerows(r for r in reader if r["file"] in keep)
    return out


def read_rows(path: str) -> list[dict]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k in ("target_err_c", "match_err_c", "total", "log_mel_l1"):
            r[k] = float(r[k])
    return rows


def octave_of(row: dict) -> str:
    """'low'/'mid'/'high': the note's place among its instrument's three octaves."""
    return {0: "low", 1: "mid", 2: "high"}[int(row["_octave_rank"])]


def breakdown(paths: list[str]) -> None:
    """Per instrument, octave and soundfont: notes off for the estimator and for each CSV's
    matches; then the notes that differ between the first two CSVs."""
    runs = [{r["file"]: r for r in read_rows(p)} for p in paths]
    files = sorted(set.intersection(*(set(r) for r in runs)))
    first = runs[0]
    ranks: dict[tuple, list[int]] = {}
    for f in files:
        ranks.setdefault((first[f]["instrument"], first[f]["soundfont"]), []).append(int(first[f]["midi_note"]))
    for f in files:
        lo = sorted(set(ranks[(first[f]["instrument"], first[f]["soundfont"])]))
        first[f]["_octave_rank"] = min(2, (int(first[f]["midi_note"]) - lo[0]) // 12)
    print(f"{len(files)} notes in all of {paths}")
    print(f"{'':28s} notes  estimator  " + "  ".join(f"run{i}" for i in range(len(runs))))
    for key in ("instrument", "soundfont", "octave"):
        groups: dict[str, list[str]] = {}
        for f in files:
            g = octave_of(first[f]) if key == "octave" else first[f][key]
            groups.setdefault(g, []).append(f)
        for g, fs in sorted(groups.items()):
            est = sum(first[f]["target_err_c"] > OFF_CENTS for f in fs)
            got = [sum(run[f]["match_err_c"] > OFF_CENTS for f in fs) for run in runs]
            if est or any(got) or key != "instrument":
                print(f"  {key[:4]} {g:22s} {len(fs):4d} {est:9d}  " + "  ".join(f"{n:4d}" for n in got))
    est_off = {f for f in files if first[f]["target_err_c"] > OFF_CENTS}
    for i, run in enumerate(runs):
        off = {f for f in files if run[f]["match_err_c"] > OFF_CENTS}
        print(f"run{i}: {len(off)} off ({100 * len(off) / len(files):.1f} %): {len(off & est_off)} also off for the "
              f"estimator, {len(off - est_off)} only the match; the estimator's off notes the match got right: "
              f"{len(est_off - off)}; median log-mel L1 {np.median([run[f]['log_mel_l1'] for f in files]):.2f} dB, "
              f"median total {np.median([run[f]['total'] for f in files]):.3f}")
    if len(runs) > 1:
        print("notes off in one run and not the other (run0 / run1 match error, c):")
        for f in files:
            a, b = runs[0][f]["match_err_c"] > OFF_CENTS, runs[1][f]["match_err_c"] > OFF_CENTS
            if a != b:
                print(f"  {f:44s} {runs[0][f]['match_err_c']:7.0f} {runs[1][f]['match_err_c']:7.0f} "
                      f"(estimator {first[f]['target_err_c']:.0f})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--notes", default="runs/real_notes")
    ap.add_argument("--matcher", default="cmaes", choices=("random", "cmaes", "grad"))
    ap.add_argument("--budget", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--files", default=None, help="text file: one note file name a line")
    ap.add_argument("--sample", type=int, default=0, help="random further notes")
    ap.add_argument("--sample-seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=99)
    ap.add_argument("--pitch-method", default="auto", choices=PP.METHODS)
    ap.add_argument("--work", default="runs/pitch_real_subset", help="scratch folder of symlinks")
    ap.add_argument("--search-loudness", action="store_true",
                    help="PitchFirstConfig.search_loudness (the search pays for the whole loudness difference)")
    add_level_step_options(ap)
    ap.add_argument("--csv", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--breakdown", nargs="+", default=None,
                    help="no matching: per instrument / soundfont / octave figures of CSVs this script wrote "
                         "(the first two also paired note by note)")
    args = ap.parse_args(argv)
    if args.breakdown:
        breakdown(args.breakdown)
        return 0
    rows = {r["file"]: r for r in read_notes_csv(os.path.join(args.notes, "notes.csv"))}
    listed = []
    if args.files:
        with open(args.files) as fh:
            listed = [line.strip() for line in fh if line.strip()]
    files = choose_files(list(rows.values()), listed, args.sample, args.sample_seed)
    cfg = MatchConfig(synth=SynthConfig(duration_s=0.5))
    pcfg = PitchFirstConfig(method=args.pitch_method, search_loudness=args.search_loudness)
    pcfg = level_step_config(pcfg, args)
    search = {"random": random_search, "cmaes": cmaes_match, "grad": grad_match}[args.matcher]
    matcher = pitch_first(search, pcfg)  # as agents.evaluation.registry.build_matchers
    key = harness_key(args.seed, 1, args.budget, args.matcher)
    out_rows = []
    t0 = time.perf_counter()
    for start in range(0, len(files), args.batch):
        chunk = files[start:start + args.batch]
        ts = wav_set(link_subset(args.notes, chunk, list(rows.values()), args.work), cfg)
        res = run_matcher(matcher, ts, args.budget, key, cfg)
        audio, _ = render_params(res.best_params01, cfg, res.render_note)
        sr = cfg.synth.sample_rate
        ref_f0 = PP.estimate_note(ts.audio, sr, args.pitch_method).f0_hz
        got_f0 = PP.estimate_note(np.asarray(audio), sr, args.pitch_method).f0_hz
        terms = jax.device_get(res.best_terms)
        for i, f in enumerate(ts.labels):
            r = rows[f]
            out_rows.append(dict(
                file=f, instrument=r["instrument"], family=r["family"], soundfont=r["soundfont"],
                split=r["split"], midi_note=r["midi_note"], played_hz=round(float(ts.played_f0_hz[i]), 3),
                target_f0_hz=round(float(ref_f0[i]), 3), match_f0_hz=round(float(got_f0[i]), 3),
                target_err_c=round(float(errors_cents(ref_f0[i], ts.played_f0_hz[i])), 1),
                match_err_c=round(float(errors_cents(got_f0[i], ts.played_f0_hz[i])), 1),
                render_note=round(float(np.asarray(res.render_note)[i]), 2),
                total=round(float(terms.total[i]), 4), log_mel_l1=round(float(terms.log_mel_l1[i]), 3)))
        print(f"{len(out_rows)}/{len(files)} notes, {time.perf_counter() - t0:.0f} s, load {load_avg()}",
              flush=True)
    est = np.array([r["target_err_c"] for r in out_rows])
    got = np.array([r["match_err_c"] for r in out_rows])
    print("file                                   target_err  match_err  target_f0  match_f0  played")
    for r in out_rows:
        if r["target_err_c"] > OFF_CENTS or r["match_err_c"] > OFF_CENTS:
            print(f"{r['file']:40s} {r['target_err_c']:9.0f} {r['match_err_c']:9.0f} {r['target_f0_hz']:9.1f} "
                  f"{r['match_f0_hz']:9.1f} {r['played_hz']:7.1f}")
    summary = dict(matcher=args.matcher, budget=args.budget, search_loudness=pcfg.search_loudness,
                   pitched_scales=list(pcfg.pitched_scales), pitched_slack=pcfg.pitched_slack,
                   pitched_floor=pcfg.pitched_floor, seed=args.seed, notes=len(out_rows),
                   estimator_off=int(np.sum(est > OFF_CENTS)), match_off=int(np.sum(got > OFF_CENTS)),
                   match_off_share=float(np.mean(got > OFF_CENTS)),
                   match_err_median_c=float(np.median(got)),
                   log_mel_l1_median=float(np.median([r["log_mel_l1"] for r in out_rows])),
                   total_median=float(np.median([r["total"] for r in out_rows])),
                   seconds=round(time.perf_counter() - t0, 1), load=load_avg(), jax=jax.__version__,
                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()})
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(out_rows[0]))
            w.writeheader()
            w.writerows(out_rows)
    if args.json:
        write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
