"""How often the note-level f0 estimators get the played note right on real recorded notes.

``python benchmarks/pitch_accuracy.py --notes runs/real_notes`` reads the set written by
``benchmarks/make_real_notes.py`` (its ``notes.csv``), estimates every note's f0 with

* ``yin``: ``jaxsynth.pitch.note_from_yin`` (pure JAX, no weights),
* ``crepe``: ``jaxsynth.pitch.note_from_crepe`` (CREPE frames, octave-checked on YIN's d'),
* ``pyin``: ``librosa.pyin`` (not in the default list; slow), median over its voiced frames,
  an estimator from outside the repository,
* ``crepe_median``: the plain median of CREPE's frame f0 over frames with confidence >= 0.5
  (no octave check), the baseline the note-level summary has to beat,

and prints, per estimator and split (dev/test/all): the share of notes more than 50 cents off
the played note, the share off by a whole number of octaves (within 50 cents), the share
called unpitched, the median absolute error in cents, then the worst notes. ``--json`` writes
the figures. CREPE rows need the ``crepe`` extra (skipped with a note otherwise).
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from make_real_notes import read_notes_csv  # noqa: E402

from benchmarks.common import load_avg, write_json  # noqa: E402

from jaxsynth import crepe as C  # noqa: E402
from jaxsynth import io as jio  # noqa: E402
from jaxsynth import pitch as PP  # noqa: E402

BATCH = 32


def load_set(folder: str, split: str, sample_rate: int, num_samples: int):
    rows = read_notes_csv(os.path.join(folder, "notes.csv"))
    if split != "all":
        rows = [r for r in rows if r["split"] == split]
    audio = np.stack([jio.load_audio(os.path.join(folder, r["file"]), sample_rate, num_samples) for r in rows])
    return rows, audio.astype(np.float32)


@jax.jit
def _crepe_plain_median(audio, weights):
    cfg = PP.PitchConfig()
    frames = PP.crepe_frames(audio, weights, cfg)
    cents = 1200.0 * jnp.log2(frames.f0_hz / 440.0)
    med = jnp.nanmedian(jnp.where(frames.voiced, cents, jnp.nan), axis=-1)
    return 440.0 * 2.0 ** (med / 1200.0)


_YIN_NOTE = jax.jit(PP.note_from_yin, static_argnames="cfg")
_CREPE_NOTE = jax.jit(PP.note_from_crepe, static_argnames="cfg")


def pyin_note(audio: np.ndarray, cfg: PP.PitchConfig) -> float:
    """librosa's probabilistic YIN (Mauch & Dixon 2014) with the same range and framing: the
    median f0 over its voiced frames, NaN where fewer than ``min_voiced_fraction`` of the frames
    are voiced. An estimator from outside this repository, to tell our estimators' slips from
    what the audio's period is."""
    import librosa  # noqa: PLC0415 (bench extra)

    f0, voiced, _ = librosa.pyin(audio, fmin=cfg.fmin_hz, fmax=cfg.fmax_hz, sr=cfg.sample_rate,
                                 frame_length=cfg.frame_length, hop_length=cfg.hop_length)
    if np.mean(voiced) < cfg.min_voiced_fraction:
        return float("nan")
    return float(440.0 * 2.0 ** (np.median(1200.0 * np.log2(f0[voiced] / 440.0)) / 1200.0))


def estimate(method: str, audio: np.ndarray) -> tuple[np.ndarray, float]:
    """f0 (NaN = unpitched) per clip and the seconds per clip after compilation."""
    cfg = PP.PitchConfig()
    if method == "yin":
        fn = lambda x: _YIN_NOTE(x, cfg).f0_hz
    elif method == "crepe":
        w = C.load_weights(cfg.crepe_model)
        fn = lambda x: _CREPE_NOTE(x, w, cfg).f0_hz
    elif method == "pyin":
        t0 = time.perf_counter()
        f0 = np.asarray([pyin_note(a, cfg) for a in audio])
        return f0, (time.perf_counter() - t0) / len(audio)
    else:
        w = C.load_weights(cfg.crepe_model)
        fn = lambda x: _crepe_plain_median(x, w)
    pad = (-len(audio)) % BATCH
    padded = np.concatenate([audio, np.zeros((pad, audio.shape[1]), np.float32)])
    jax.block_until_ready(fn(jnp.asarray(padded[:BATCH])))
    t0 = time.perf_counter()
    out = [np.asarray(fn(jnp.asarray(padded[i:i + BATCH]))) for i in range(0, len(padded), BATCH)]
    elapsed = time.perf_counter() - t0
    return np.concatenate(out)[:len(audio)], elapsed / len(padded)


def summarize(err_cents: np.ndarray) -> dict:
    """err: signed cents vs the played note, NaN where the estimator said unpitched."""
    n = len(err_cents)
    pitched = np.isfinite(err_cents)
    e = np.abs(err_cents[pitched])
    octave = np.abs(e - 1200.0 * np.round(e / 1200.0)) <= 50.0
    return dict(n=n, off_50c=float((np.sum(e > 50) + np.sum(~pitched)) / n),
                octave_errors=float(np.sum((e > 50) & octave) / n),
                unpitched=float(np.sum(~pitched) / n),
                median_abs_cents=float(np.median(e)) if e.size else float("nan"),
                p90_abs_cents_within_50=float(np.percentile(e[e <= 50], 90)) if np.any(e <= 50) else float("nan"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--notes", default="runs/real_notes", help="folder written by make_real_notes.py")
    ap.add_argument("--methods", default="yin,crepe,crepe_median")
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--worst", type=int, default=12)
    ap.add_argument("--only", default=None, help="only notes whose file name contains this text")
    args = ap.parse_args(argv)
    sr, n = 22050, 11025
    rows, audio = load_set(args.notes, "all", sr, n)
    if args.only:
        keep = [i for i, r in enumerate(rows) if args.only in r["file"]]
        rows, audio = [rows[i] for i in keep], audio[keep]
    truth = np.array([r["f0_hz"] for r in rows])
    splits = np.array([r["split"] for r in rows])
    results = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=platform.processor() or platform.machine(),
                   load=load_avg(), jax=jax.__version__, notes=len(rows), methods={})
    for method in args.methods.split(","):
        if method not in ("yin", "pyin") and not PP.crepe_available():
            print(f"{method}: skipped, CREPE weights unavailable ({C.INSTALL_HINT})")
            continue
        f0, per_clip_s = estimate(method, audio)
        err = PP.cents_between(f0, truth)
        entry = {s: summarize(err[splits == s] if s != "all" else err) for s in ("dev", "test", "all")}
        entry["ms_per_clip"] = 1e3 * per_clip_s
        results["methods"][method] = entry
        print(f"\n{method}: {1e3 * per_clip_s:.2f} ms/clip (batch {BATCH}, after compilation)")
        for s in ("dev", "test", "all"):
            m = entry[s]
            print(f"  {s:4s} n={m['n']:3d}  >50c off {100 * m['off_50c']:5.1f} %  octave errors "
                  f"{100 * m['octave_errors']:5.1f} %  unpitched {100 * m['unpitched']:4.1f} %  "
                  f"median |err| {m['median_abs_cents']:.1f} c")
        bad = np.argsort(-np.nan_to_num(np.abs(err), nan=1e9))[:args.worst]
        for i in bad:
            if np.isfinite(err[i]) and abs(err[i]) <= 50:
                break
            print(f"    {rows[i]['file']}: {err[i]:+.0f} c")
    print(f"\nload (1/5/15 min): {results['load']}")
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
