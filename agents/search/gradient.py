"""Gradient matching: Adam on the matching loss through the differentiable synth, from a few
starts per target, projected onto [0, 1] after each step. Discrete parameters have no
gradient and are held at each start's snapped value, so restarts explore them. A step is
charged ``MatchConfig.grad_step_renders`` renders (``agents.search.common``).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array

from agents.search.common import (
    MatchConfig,
    MatchResult,
    candidate_losses,
    check_budget,
    check_targets,
    expand,
    finish,
    free_indices,
    init_best,
    update_best,
)
from jaxsynth import params as P
from jaxsynth.features import Features


@partial(jax.jit, static_argnames=("t", "starts", "free_idx", "quiet", "quiet_max"))
def _grad_starts(key, base01, init01, t, starts, free_idx, quiet=(), quiet_max=1.0):
    """Start 0 at ``init01``, the others uniform in [0, 1], except the parameters ``quiet``
    (indices into the full vector): uniform in [0, ``quiet_max``]; snapped (discrete entries on
    their grid)."""
    free = jnp.asarray(free_idx)
    scale = np.where(np.isin(np.asarray(free_idx), np.asarray(quiet, int)), quiet_max, 1.0)
    x0 = jax.random.uniform(key, (t, starts, len(free_idx))) * jnp.asarray(scale, jnp.float32)
    x0 = x0.at[:, 0].set(jnp.broadcast_to(init01[free], (t, len(free_idx))))
    return expand(x0, base01, free_idx)[..., jnp.asarray(free_idx)]


@partial(jax.jit, static_argnames=("cfg", "free_idx", "learning_rate"))
def grad_step(x, opt_state, target, base01, cfg, free_idx, learning_rate, notes=None):
    """One Adam step of every start of every target; returns the terms at ``x`` (pre-step)."""
    continuous = jnp.asarray(~P.IS_DISCRETE[np.asarray(free_idx)])

    def loss_fn(x):
        terms = candidate_losses(expand(x, base01, free_idx), target, cfg, notes)
        return jnp.sum(terms.total), terms

    (_, terms), g = jax.value_and_grad(loss_fn, has_aux=True)(x)
    g = jnp.where(continuous, jnp.nan_to_num(g), 0.0)  # discrete entries held
    upd, opt_state = optax.adam(learning_rate).update(g, opt_state, x)
    return jnp.clip(optax.apply_updates(x, upd), 0.0, 1.0), opt_state, terms  # projected


def grad_match(key: Array, target: Features, module_mask, budget: int,
               cfg: MatchConfig = MatchConfig(), base01=P.DEFAULT_PARAMS01, init01=None,
               starts: int = 4, learning_rate: float = 0.05, notes=None) -> MatchResult:
    """Adam on the matching loss through the differentiable synth, from ``starts`` points per
    target (the first at ``init01``, default ``base01``; the rest uniform), projected onto
    [0, 1] after each step. Each step of each start costs ``cfg.grad_step_renders`` renders;
    the number of starts shrinks when the budget cannot give every start two steps. The best
    point is taken over the evaluated iterates (the last update is not evaluated).
    ``cfg.start_quiet`` names parameters that the random starts draw in [0,
    ``cfg.start_quiet_max``] only (a level's squared curve has no gradient at 0, so they do
    not start at 0 either: Adam can still raise them)."""
    t = check_targets(target, base01)
    free_idx = free_indices(module_mask, cfg.held)
    base01 = jnp.asarray(base01, jnp.float32)
    init01 = base01 if init01 is None else jnp.asarray(init01, jnp.float32)
    cost = cfg.grad_step_renders
    starts = max(1, min(int(starts), int(budget) // (2 * cost)))
    steps = check_budget(budget, starts * cost, "gradient step over all starts")
    quiet = tuple(sorted(P.INDEX[n] for n in cfg.start_quiet))
    x = _grad_starts(key, base01, init01, t, starts, free_idx, quiet, float(cfg.start_quiet_max))
    opt_state = optax.adam(float(learning_rate)).init(x)
    best, trace = init_best(t, base01), []
    for _ in range(steps):
        params = expand(x, base01, free_idx)
        x, opt_state, terms = grad_step(x, opt_state, target, base01, cfg, free_idx,
                                         float(learning_rate), notes)
        best = update_best(best, terms, params)
        trace.append(best)
    return finish(best, trace, starts * cost)


# Pitch-first's pitch term for gradient matching (``pitch_first.pitch_term_weight``): measured on
# 64 held-out stage-3 presets at 256 renders, it lowered the f0 misses (4 -> 2 of 25 pitched),
# the median f0 error, the total and the log-mel L1; for CMA-ES it did not (benchmarks/RESULTS.md,
# "Pitch-first matching"), which keeps 0.
grad_match.pitch_term_weight = 1.0
