"""CMA-ES sound matching with evosax 0.3 (baseline and teacher, decision D5).

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

Trajectories -> transitions (D5), ``cmaes_transitions``: CMA-ES is run on targets of the
environment's bank from the env's start preset; each target's best-so-far trajectory
(start -> improved best -> ... -> final best) is replayed as an episode of the real environment.
A CMA jump may change several modules at once, but an env action edits one module by at most
``max_delta`` per parameter, so each jump is split into per-module steps (modules in
``params.MODULES`` order), each as many steps as the largest move needs; the actions are
computed against the env's actual (clipped, snapped) state, so the episode ends exactly on the
CMA best unless ``max_steps`` cuts it. Observations, rewards and terminated/truncated come from
``env.step`` itself, stored in ``agents.replay``'s ``Transition`` layout; ``save_transitions``
/ ``load_transitions`` write/read them as one ``.npz`` (atomically).
The CMA search renders with ``MatchConfig.render_seed``'s key, the bank with its own fixed key;
they differ only in unison start phases and noise, so the env's rewards (the recorded ones) are
computed exactly as in training.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from evosax.algorithms import CMA_ES

from jaxsynth import params as P
from jaxsynth.features import Features

from agents.matchers import (MatchConfig, MatchResult, check_budget, check_targets,
                             default_population, evaluate_candidates, expand, finish, free_indices,
                             init_best, update_best)


def make_strategy(population: int, num_free: int) -> CMA_ES:
    """The evosax CMA-ES for ``num_free`` normalized parameters (cached: one object per shape,
    so the jitted ask/tell below are traced once per shape)."""
    return _STRATEGIES.setdefault((population, num_free),
                                  CMA_ES(population_size=population, solution=jnp.zeros(num_free)))


_STRATEGIES: dict[tuple[int, int], CMA_ES] = {}


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
                boundary_penalty: float = 1.0) -> MatchResult:
    """Match ``T`` targets (features with a leading (T,) axis) with CMA-ES, ``budget`` renders
    per target: ``budget // population`` generations of ``population`` candidates.

    Each target's search starts at ``init01`` ((N_PARAMS,) or (T, N_PARAMS); default
    ``base01``, the stage defaults the environment also starts from) with step size ``sigma0``
    in normalized units. ``population`` defaults to 4 + floor(3 ln n) for n free parameters,
    capped at budget // 2 so that there are at least 2 generations.
    """
    t = check_targets(target, base01)
    free_idx = free_indices(module_mask)
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
        terms = evaluate_candidates(params, target, cfg)
        state = _tell(k_tell, x, terms.total, state, es_params, penalty, es)
        best = update_best(best, terms, params)
        trace.append(best)
    return finish(best, trace, population)


# ----------------------------------------------------------------------------- transitions (D5)


def jump_actions(path01: np.ndarray, stage: int, max_delta: np.ndarray, max_steps: int,
                 discrete: str = "snap") -> tuple[np.ndarray, np.ndarray, int]:
    """Actions that walk the env from ``path01[0]`` through every point of ``path01`` (K, N).

    Returns (module (max_steps,), delta (max_steps, N) in [-1, 1], number of valid steps);
    steps past the end are zero-delta padding and are not stored. Each jump is split per
    changed module (unlocked in ``stage``) into ``ceil(max |move| / max_delta)`` steps; each
    step's delta is recomputed from the env's current state (``env.apply_action``), continuous
    parameters moving an equal share of what remains, discrete ones moving as far as allowed
    (so snapping cannot strand them).
    """
    from agents import curriculum as C
    from agents.env import Action, apply_action
    unlocked = np.asarray(C.stage_module_masks()[stage])
    md = np.asarray(max_delta, np.float64)
    cur = np.asarray(path01[0], np.float32)
    modules, deltas = [], []
    for nxt in np.asarray(path01[1:], np.float32):
        for m in np.nonzero(unlocked)[0]:
            sel = P.MODULE_PARAMS[m]
            n_sub = int(np.ceil(np.max(np.abs(nxt - cur)[sel] / md[sel]) - 1e-6))
            for k in range(n_sub):
                remaining = (nxt.astype(np.float64) - cur) / md
                share = np.where(P.IS_DISCRETE, remaining, remaining / (n_sub - k))
                delta = np.clip(np.where(sel, share, 0.0), -1.0, 1.0).astype(np.float32)
                new, _, _ = apply_action(jnp.asarray(cur), Action(jnp.int32(m), jnp.asarray(delta)),
                                         jnp.int32(stage), jnp.asarray(md, jnp.float32), discrete)
                cur = np.asarray(new)
                modules.append(m)
                deltas.append(delta)
    n = min(len(modules), max_steps)
    mod = np.zeros(max_steps, np.int32)
    dl = np.zeros((max_steps, P.N_PARAMS), np.float32)
    if n:
        mod[:n] = modules[:n]
        dl[:n] = np.stack(deltas[:n])
    return mod, dl, n


@partial(jax.jit, static_argnames=("env",))
def _rollout(env, params, target, start, modules, deltas):
    """One episode of ``env`` from reset_to(target, start) under the given actions (one
    trajectory; vmap over trajectories)."""
    from agents.env import Action
    _, state0 = env.reset_to(target, start, params)

    def step(state, a):
        module, delta = a
        _, nxt, reward, terminated, truncated, info = env.step(
            jax.random.key(0), state, Action(module, delta), params)
        out = dict(log_mel=state.current_log_mel, params01=state.params01,
                   target_index=state.target_index, module=module, delta=delta, reward=reward,
                   terminated=terminated, truncated=truncated, next_log_mel=info["next_log_mel"],
                   next_params01=info["next_params01"], loss=info["loss"])
        return nxt, out

    _, out = jax.lax.scan(step, state0, (modules, deltas))
    return out


def rollout(env, env_params, target, start, modules, deltas) -> dict:
    """``_rollout`` vmapped over trajectories: targets (B,), starts (B,), modules (B, S),
    deltas (B, S, N) -> dict of (B, S, ...) arrays (transitions and the env's loss)."""
    return jax.vmap(_rollout, in_axes=(None, None, 0, 0, 0, 0))(
        env, env_params, jnp.asarray(target, jnp.int32), jnp.asarray(start, jnp.int32),
        jnp.asarray(modules, jnp.int32), jnp.asarray(deltas, jnp.float32))


def cmaes_transitions(key: jax.Array, env, env_params, targets, budget: int, top_k: int | None = None,
                      start: int = 0, population: int | None = None, sigma0: float = 0.5):
    """Run CMA-ES on bank targets ``targets`` (indices into the current stage) from start preset
    ``start``, keep the ``top_k`` trajectories with the largest loss reduction, and replay them
    in ``env``. Returns (``replay.Transition`` with a flat leading axis, info dict with per-
    transition ``trajectory``/``step`` ids and the CMA result)."""
    from agents import curriculum as C
    from agents.replay import synth_transition
    ec, bank = env.config, env_params.bank
    stage = int(env_params.stage)
    targets = np.asarray(targets, np.int32)
    if targets.ndim != 1 or targets.size == 0 or targets.min() < 0 or targets.max() >= bank.bank_size:
        raise ValueError(f"targets must be a non-empty 1-D list of indices in [0, {bank.bank_size})")
    cfg = MatchConfig(synth=ec.synth, weights=ec.loss_weights, note=ec.note, velocity=ec.velocity,
                      features_override=ec.features)
    tf = jax.tree.map(lambda x: x[stage][targets], bank.features)
    start01 = bank.start_params01[stage, start]
    res = cmaes_match(key, tf, C.stage_module_masks()[stage], budget, cfg, base01=start01,
                      population=population, sigma0=sigma0)
    start_loss = np.asarray(bank.start_loss[stage, start][targets])
    gain = start_loss - np.asarray(res.best_loss)
    k = len(targets) if top_k is None else max(1, min(int(top_k), len(targets)))
    keep = np.argsort(-gain, kind="stable")[:k]
    md = np.asarray(env_params.max_delta)
    plans = []
    for t in keep:
        path = np.concatenate([np.asarray(start01)[None], np.asarray(res.trace_params01[t])])
        path = path[np.concatenate([[True], np.any(np.diff(path, axis=0) != 0, axis=1)])]
        plans.append(jump_actions(path, stage, md, ec.max_steps, ec.discrete))
    out = rollout(env, env_params, targets[keep], np.full(k, start), np.stack([p[0] for p in plans]),
                  np.stack([p[1] for p in plans]))
    valid = np.arange(ec.max_steps)[None] < np.array([p[2] for p in plans])[:, None]
    flat = {name: np.asarray(v)[valid] for name, v in out.items()}
    tr = synth_transition(flat["log_mel"], flat["params01"], flat["target_index"], stage,
                          flat["module"], flat["delta"], flat["reward"], flat["terminated"],
                          flat["truncated"], flat["next_log_mel"], flat["next_params01"])
    traj, step = np.nonzero(valid)
    info = dict(trajectory=traj.astype(np.int32), step=step.astype(np.int32),
                target=targets[keep], start=np.full(k, start, np.int32), result=res,
                kept=keep, env_loss=flat["loss"], cma_best_params01=np.asarray(res.best_params01)[keep])
    return tr, info


_TRANSITION_FIELDS = ("obs.log_mel", "obs.params01", "obs.target_index", "obs.stage", "module",
                      "delta", "reward", "terminated", "truncated", "next_obs.log_mel",
                      "next_obs.params01", "next_obs.target_index", "next_obs.stage")


def _get(tr, name):
    obj = tr
    for part in name.split("."):
        obj = getattr(obj, part)
    return np.asarray(obj)


def save_transitions(path, transitions, info: dict | None = None) -> None:
    """Write transitions (+ ``trajectory``/``step`` ids) to ``path`` (.npz), atomically."""
    import os
    import tempfile
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"{path}: transitions are saved as .npz; use a name ending in .npz")
    arrays = {name: _get(transitions, name) for name in _TRANSITION_FIELDS}
    for extra in ("trajectory", "step"):
        if info is not None and extra in info:
            arrays[extra] = np.asarray(info[extra])
    arrays["format"] = np.asarray("jaxsynth-cma-transitions-v1")
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_transitions(path):
    """Read a file written by ``save_transitions`` -> (``replay.Transition``, extras dict)."""
    from agents.replay import SynthObsStore, Transition
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable transitions file ({e}); write it with "
                         "agents.cmaes.save_transitions") from None
    missing = [n for n in _TRANSITION_FIELDS + ("format",) if n not in data]
    if missing or str(data["format"]) != "jaxsynth-cma-transitions-v1":
        raise ValueError(f"{path}: not a jaxsynth CMA transitions file (missing {missing}); "
                         "write it with agents.cmaes.save_transitions")
    g = lambda n: jnp.asarray(data[n])
    obs = SynthObsStore(g("obs.log_mel"), g("obs.params01"), g("obs.target_index"), g("obs.stage"))
    nxt = SynthObsStore(g("next_obs.log_mel"), g("next_obs.params01"), g("next_obs.target_index"),
                        g("next_obs.stage"))
    tr = Transition(obs=obs, module=g("module"), delta=g("delta"), reward=g("reward"),
                    terminated=g("terminated"), truncated=g("truncated"), next_obs=nxt)
    extras = {n: np.asarray(data[n]) for n in ("trajectory", "step") if n in data}
    return tr, extras
