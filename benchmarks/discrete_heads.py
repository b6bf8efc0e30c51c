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
    """The network's guesses of ``true01``'s renders (``amortized.start_fn``, as an episode
    start gets them) and the matching loss of each guess."""
    cfg = loaded.config
    key = rendering.render_key(cfg.render_seed)
    start = A.start_fn(loaded)

    @jax.jit
    def run(t):
        guess = start(None, t, None, None)
        render = lambda x: rendering.render_analyze(x, key, cfg.synth, cfg.features, cfg.note, 1.0)[1]
        return guess, matching_loss(render(guess), render(t)).total

    return jax.device_get(run(jnp.asarray(true01)))


def scores(guess: np.ndarray, true01: np.ndarray, loss: np.ndarray, note: float) -> dict:
    """Discrete accuracy (audible only, best oscillator order), octave errors, error, loss."""
    swapped = np.asarray(A.swap_oscillators(jnp.asarray(true01)))
    err, err_swapped = (np.mean(np.abs(guess - t), axis=-1) for t in (true01, swapped))
    t = np.where((err_swapped < err)[:, None], swapped, true01)  # the order that fits the guess
    w = np.asarray(A.audibility_weights(jnp.asarray(t), note))
    out = {"param_error": float(np.mean(np.minimum(err, err_swapped))),
           "guess_loss_median": float(np.median(loss))}
    for i in A.DISCRETE_IDX:
        name = P.SPECS[i].name
        heard = w[:, i] >= 0.5
        g, y = (np.asarray(P.choice_index(jnp.asarray(x), name)) for x in (guess, t))
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
