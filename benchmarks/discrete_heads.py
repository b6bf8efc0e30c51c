"""Categorical vs snapped discrete parameters for learning (the amortized first guess).

``python benchmarks/discrete_heads.py --runs CATEGORICAL_RUN SNAPPED_RUN --stages 0 1 2 3 --n 256``

Two networks trained alike (``python -m agents.amortized_train --discrete-head categorical|snapped``)
guess the held-out presets of the evaluation harness (seed ``--seed``, ``--n`` per stage). Per
discrete parameter (the two coarse tunes, unison voices, filter type, LFO shape) it counts how
often the guess is the true choice where the parameter is audible at the true preset
(``amortized.audibility_weights`` >= 0.5), taking for each preset the oscillator order that
fits the guess better (the two oscillators are interchangeable); for the coarse tunes also how
often the guess is whole octaves off. With it: the mean |guess - true| over all parameters and
the median matching loss of the guessed presets (one render each, the harness's analysis).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from agents import curriculum as C  # noqa: E402
from agents import rendering  # noqa: E402
from agents.sac import amortized as A  # noqa: E402
from jaxsynth import params as P  # noqa: E402
from jaxsynth.losses import matching_loss  # noqa: E402


def guess_and_loss(loaded: A.LoadedAmortized, true01: np.ndarray):
    """The network's guesses of ``true01``'s renders and the matching loss of each guess."""
    cfg = loaded.config
    key = rendering.render_key(cfg.render_seed)

    @jax.jit
    def run(t):
        audio, feats = rendering.render_analyze(t, key, cfg.synth, cfg.features, cfg.note, 1.0)
        guess = A.guess_params01(cfg.net(), loaded.net_params, *A.analyse_targets(audio, feats, cfg),
                                 cfg.discrete_head)
        _, gfeats = rendering.render_analyze(guess, key, cfg.synth, cfg.features, cfg.note, 1.0)
        return guess, matching_loss(gfeats, feats).total

    return jax.device_get(run(jnp.asarray(true01)))


def choices(x01: np.ndarray, i: int) -> np.ndarray:
    n = len(P.SPECS[i].choices)
    return np.round(np.clip(x01[..., i], 0.0, 1.0) * (n - 1)).astype(int)


def scores(guess: np.ndarray, true01: np.ndarray, loss: np.ndarray, note: float) -> dict:
    """Discrete accuracy (audible only, best oscillator order), octave errors, error, loss."""
    w = np.asarray(A.audibility_weights(jnp.asarray(true01), note))
    swapped = np.asarray(A.swap_oscillators(jnp.asarray(true01)))
    err = lambda t: np.mean(np.abs(guess - t), axis=-1)
    t = np.where((err(swapped) < err(true01))[:, None], swapped, true01)
    w = np.where((err(swapped) < err(true01))[:, None], np.asarray(A.audibility_weights(jnp.asarray(swapped), note)), w)
    out = {"param_error": float(np.mean(np.minimum(err(true01), err(swapped)))),
           "guess_loss_median": float(np.median(loss))}
    for i in A.DISCRETE_IDX:
        name = P.SPECS[i].name
        heard = w[:, i] >= 0.5
        g, y = choices(guess, i), choices(t, i)
        out[f"{name} exact"] = [int(np.sum((g == y) & heard)), int(np.sum(heard))]
        if name.endswith("coarse_st"):
            octave = (g != y) & ((g - y) % 12 == 0)
            out[f"{name} octave off"] = [int(np.sum(octave & heard)), int(np.sum(heard))]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, help="amortized run directories to compare")
    ap.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--n", type=int, default=256, help="held-out presets per stage")
    ap.add_argument("--seed", type=int, default=0, help="held-out seed (the harness judges seed 0)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    true01 = np.concatenate([C.heldout_presets(a.seed, s, a.n) for s in a.stages])
    rows, losses = {}, {}
    for run in a.runs:
        loaded = A.load_amortized(run)
        guess, losses[run] = guess_and_loss(loaded, true01)
        rows[run] = {"discrete_head": loaded.config.discrete_head,
                     **scores(guess, true01, losses[run], loaded.config.note)}
        print(run, json.dumps(rows[run]))
    first = a.runs[0]
    for run in a.runs[1:]:  # paired on the same presets: the median difference, how often lower
        diff = losses[run] - losses[first]
        rows[run]["paired vs first"] = {"median_diff": float(np.median(diff)),
                                        "lower_share": float(np.mean(diff < 0))}
        print(f"{run} - {first}: median paired difference {np.median(diff):+.3f}, "
              f"lower on {np.mean(diff < 0):.0%} of {diff.size}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"stages": a.stages, "n": a.n, "seed": a.seed, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
