"""Random search: uniform random presets in the unlocked modules, drawn a population at a
time (one batched render of every target's candidates per draw), best-so-far kept.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array

from agents.search.common import (
    MatchConfig,
    MatchResult,
    check_budget,
    check_targets,
    default_population,
    evaluate_candidates,
    expand,
    finish,
    free_indices,
    init_best,
    update_best,
)
from jaxsynth import params as P
from jaxsynth.features import Features


@partial(jax.jit, static_argnames=("t", "population", "free_idx"))
def _random_ask(key, base01, t, population, free_idx):
    return expand(jax.random.uniform(key, (t, population, len(free_idx))), base01, free_idx)


def random_search(key: Array, target: Features, module_mask, budget: int,
                  cfg: MatchConfig = MatchConfig(), base01=P.DEFAULT_PARAMS01,
                  population: int | None = None, notes=None) -> MatchResult:
    """Uniform random presets in the unlocked modules (snapped), ``budget`` per target, drawn
    ``population`` at a time (one batch render per draw for all targets). The default batch is
    CMA-ES's default population (same cap), so both share one compiled evaluation."""
    t = check_targets(target, base01)
    free_idx = free_indices(module_mask, cfg.held)
    if population is None:
        population = max(2, min(default_population(len(free_idx)), int(budget) // 2))
    population = max(1, min(int(population), int(budget)))
    gens = check_budget(budget, population, "population")
    base01 = jnp.asarray(base01, jnp.float32)
    best, trace = init_best(t, base01), []
    for k in jax.random.split(key, gens):
        params = _random_ask(k, base01, t, population, free_idx)
        best = update_best(best, evaluate_candidates(params, target, cfg, notes), params)
        trace.append(best)
    return finish(best, trace, population)
