"""CMA-ES sound matching with evosax 0.3 (a baseline, and the teacher of the SAC warm start).

One CMA-ES per target, ``vmap``-ed over targets (evosax strategies take explicit state and
params pytrees, so ``init/ask/tell`` vmap directly); each generation renders every target's
population as ONE batch, and the generations run in one ``lax.scan`` under ``jit``. The search
space is the normalized parameters of the unlocked modules only (locked ones hold ``base01``),
so the CMA dimension is the number of free parameters, not 33.

Bounds: evosax does no clipping, so a candidate ``x`` is evaluated at ``clip(x, 0, 1)`` (then
snapped) and its fitness gets ``boundary_penalty * ||x - clip(x)||^2``, the quadratic boundary
penalty of Hansen's CMA-ES tutorial (arXiv:1604.00772, Appendix B), which keeps the mean
inside the box. The best-so-far trajectory records the loss of the clipped, snapped candidate
(without the penalty).

Its best-so-far trajectories become SAC teacher data in ``agents.sac.teacher``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from evosax.algorithms import CMA_ES

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

_STRATEGIES: dict[tuple[int, int], CMA_ES] = {}


def make_strategy(population: int, num_free: int) -> CMA_ES:
    """The evosax CMA-ES for ``num_free`` normalized parameters (cached: one object per shape,
    so the jitted ask/tell below are traced once per shape)."""
    return _STRATEGIES.setdefault((population, num_free),
                                  CMA_ES(population_size=population, solution=jnp.zeros(num_free)))


@partial(jax.jit, static_argnames=("es", "free_idx"))
def _init(key, init01, sigma0, es, free_idx):
    t = init01.shape[0]
    params = es.default_params.replace(std_init=sigma0)
    mean0 = init01[:, jnp.asarray(free_idx)]
    return jax.vmap(es.init, in_axes=(0, 0, None))(jax.random.split(key, t), mean0, params), params


@partial(jax.jit, static_argnames=("es", "free_idx"))
def _ask(key, state, es_params, base01, es, free_idx):
    """Sample each target's population; ``x`` unbounded, ``params01`` clipped and snapped."""
    t = state.mean.shape[0]
    x, state = jax.vmap(es.ask, in_axes=(0, 0, None))(jax.random.split(key, t), state, es_params)
    return x, expand(x, base01, free_idx), state


@partial(jax.jit, static_argnames=("es",))
def _tell(key, x, loss, state, es_params, boundary_penalty, es):
    """Fitness = loss of the clipped candidate + boundary_penalty * squared distance outside
    [0, 1] (Hansen 2016, App. B); non-finite losses rank last."""
    t = x.shape[0]
    outside = jnp.sum(jnp.square(x - jnp.clip(x, 0.0, 1.0)), axis=-1)
    fitness = jnp.where(jnp.isfinite(loss), loss, 1e6) + boundary_penalty * outside
    state, _ = jax.vmap(es.tell, in_axes=(0, 0, 0, 0, None))(
        jax.random.split(key, t), x, fitness, state, es_params)
    return state


def cmaes_match(key: jax.Array, target: Features, module_mask, budget: int,
                cfg: MatchConfig = MatchConfig(), base01=P.DEFAULT_PARAMS01, init01=None,
                population: int | None = None, sigma0: float = 0.5,
                boundary_penalty: float = 1.0, notes=None) -> MatchResult:
    """Match ``T`` targets (features with a leading (T,) axis) with CMA-ES, ``budget`` renders
    per target: ``budget // population`` generations of ``population`` candidates.

    Each target's search starts at ``init01`` ((N_PARAMS,) or (T, N_PARAMS); default
    ``base01``, the stage defaults the environment also starts from) with step size ``sigma0``
    in normalized units. ``population`` defaults to 4 + floor(3 ln n) for n free parameters,
    capped at budget // 2 so that there are at least 2 generations. ``notes`` (T,): the MIDI
    note each target's candidates play (default ``cfg.note``).
    """
    t = check_targets(target, base01)
    free_idx = free_indices(module_mask, cfg.held)
    if population is None:
        population = max(2, min(default_population(len(free_idx)), int(budget) // 2))
    if population < 2:
        raise ValueError(f"CMA-ES needs a population of at least 2, got {population}")
    gens = check_budget(budget, population, "CMA-ES generation")
    base01 = jnp.asarray(base01, jnp.float32)
    init01 = jnp.broadcast_to(base01 if init01 is None else jnp.asarray(init01, jnp.float32),
                              (t, P.N_PARAMS))
    es = make_strategy(int(population), len(free_idx))
    k_init, k_run = jax.random.split(key)
    state, es_params = _init(k_init, init01, jnp.float32(sigma0), es, free_idx)
    penalty = jnp.float32(boundary_penalty)
    best, trace = init_best(t, base01), []
    for k in jax.random.split(k_run, gens):
        k_ask, k_tell = jax.random.split(k)
        x, params, state = _ask(k_ask, state, es_params, base01, es, free_idx)
        terms = evaluate_candidates(params, target, cfg, notes)
        state = _tell(k_tell, x, terms.total, state, es_params, penalty, es)
        best = update_best(best, terms, params)
        trace.append(best)
    return finish(best, trace, population)
