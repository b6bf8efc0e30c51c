"""Can harmonic evidence settle the octave of real notes? A check of one octave rule.

``python benchmarks/pitch_octave_evidence.py --notes runs/real_notes`` reads the set of
``make_real_notes.py``, estimates each note's f0 with ``jaxsynth.pitch.note_from_yin`` and
measures, from the mean power spectrum over audible frames (2,048-sample Hann frames, 8,192-point
FFT, harmonic k's power = the spectrum's peak within +-f0/4 of k f0, up to 5 kHz):

* ``odd share`` of a candidate f: the power at its odd harmonics (f, 3f, 5f, ...) over the power
  at all its harmonics. A note heard one octave below its real f0 has (almost) nothing at the odd
  harmonics of the wrong f0, so a low share says "go up an octave"; a real low note, or a sound
  whose sub-octave carries real energy (the GM organs' 16-foot stops), has a high one.
* the same share with every harmonic weighted by the A-weighting curve (IEC 61672), i.e. the
  ear's lower sensitivity to the low partials, which a listener's octave judgement follows.

Then it applies the rule "while the odd share of f is below tau, f <- 2 f" (at most twice) for a
range of tau and prints, per split, the share of notes more than 50 cents off the played note,
how many notes the rule fixes and how many it breaks, and the odd share at f0/2 (the opposite
rule, "go down an octave") of the correctly read notes against the notes read an octave high.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pitch_accuracy import load_set  # noqa: E402

from benchmarks.common import load_avg  # noqa: E402
from jaxsynth import pitch as PP  # noqa: E402

SR, N_FFT, FRAME, HOP = 22050, 8192, 2048, 256
F_MAX = 5000.0
_YIN_NOTE = jax.jit(PP.note_from_yin, static_argnames="cfg")


def a_weighting_db(f_hz: np.ndarray) -> np.ndarray:
    """IEC 61672 A-weighting in dB (0 dB at 1 kHz)."""
    f2 = np.square(np.maximum(f_hz, 1.0))
    ra = 12194.0 ** 2 * f2 * f2 / ((f2 + 20.6 ** 2) * np.sqrt((f2 + 107.7 ** 2) * (f2 + 737.9 ** 2))
                                   * (f2 + 12194.0 ** 2))
    return 20.0 * np.log10(ra) + 2.0


def mean_power_spectrum(x: np.ndarray) -> np.ndarray:
    """Mean power spectrum over the frames within 45 dB of the loudest one."""
    frames = np.lib.stride_tricks.sliding_window_view(x, FRAME)[::HOP] * np.hanning(FRAME)
    power = np.abs(np.fft.rfft(frames, n=N_FFT, axis=-1)) ** 2
    level = power.sum(axis=-1)
    return power[level > level.max() * 10 ** -4.5].mean(axis=0)


FREQS = np.fft.rfftfreq(N_FFT, 1.0 / SR)


def odd_share(power: np.ndarray, f0_hz: float, weighted: bool) -> float:
    """Power at the odd harmonics of ``f0_hz`` over the power at all of them (up to F_MAX)."""
    k = np.arange(1, max(int(F_MAX // f0_hz), 2) + 1)
    amps = np.zeros(len(k))
    for j, kk in enumerate(k):
        near = np.abs(FREQS - kk * f0_hz) < max(0.25 * f0_hz, 15.0)
        amps[j] = power[near].max() if near.any() else 0.0
    if weighted:
        amps = amps * 10.0 ** (a_weighting_db(k * f0_hz) / 10.0)
    return float(amps[0::2].sum() / max(amps.sum(), 1e-30))


def octave_up_rule(power, f0_hz, tau, weighted, steps=2):
    f = f0_hz
    for _ in range(steps):
        if odd_share(power, f, weighted) >= tau or 2 * f > 2100.0:
            break
        f = 2 * f
    return f


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--notes", default="runs/real_notes")
    ap.add_argument("--taus", default="0.02,0.05,0.1,0.15,0.2")
    args = ap.parse_args(argv)
    rows, audio = load_set(args.notes, "all", SR, SR // 2)
    truth = np.array([r["f0_hz"] for r in rows])
    split = np.array([r["split"] for r in rows])
    organ = np.array([r["family"] == "organ" for r in rows])
    f0 = np.concatenate([np.asarray(_YIN_NOTE(jnp.asarray(audio[i:i + 64]), PP.PitchConfig()).f0_hz)
                         for i in range(0, len(audio), 64)])
    power = [mean_power_spectrum(x) for x in audio]
    off = lambda f: np.abs(PP.cents_between(f, truth)) > 50.0
    base = off(f0)

    def shares(f):
        return {s: f"{100 * f[split == s].mean():.1f} %" for s in ("dev", "test")} | {"all": f"{100 * f.mean():.1f} %"}

    print(f"{len(rows)} notes; YIN note f0 >50 c off: {shares(base)}; outside the organs: {base[~organ].sum()}")
    for weighted in (False, True):
        for tau in (float(t) for t in args.taus.split(",")):
            new = off(np.array([octave_up_rule(p, f, tau, weighted) for p, f in zip(power, f0)]))
            print(f"  up-rule {'A-weighted' if weighted else 'flat      '} tau={tau:.2f}: >50c off {shares(new)}, "
                  f"fixed {np.sum(base & ~new)}, broken {np.sum(new & ~base)} "
                  f"(outside the organs: {np.sum(new & ~base & ~organ)})")
    err = PP.cents_between(f0, truth)
    for weighted in (False, True):
        down = np.array([odd_share(p, f / 2, weighted) for p, f in zip(power, f0)])
        right = np.abs(err) <= 50
        high = err > 600
        print(f"  odd share at f0/2 ({'A-weighted' if weighted else 'flat'}): correct notes 95/99/100th "
              f"percentile {np.round(np.percentile(down[right], [95, 99, 100]), 3).tolist()}, notes read "
              f"an octave high: {np.round(np.sort(down[high]), 3).tolist()}")
    print(f"load (1/5/15 min): {load_avg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
