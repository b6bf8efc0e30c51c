"""Teacher data for SAC: CMA-ES trajectories as environment transitions, and behaviour cloning.

CMA-ES trajectories -> transitions, ``cmaes_transitions``: CMA-ES is run on targets of the
environment's bank from the env's start preset; each target's best-so-far trajectory
(start -> improved best -> ... -> final best) is replayed as an episode of the real environment.
A CMA jump may change several modules at once, but an env action edits one module by at most
``max_delta`` per parameter, so each jump is split into per-module steps (modules in
``params.MODULES`` order), each as many steps as the largest move needs; the actions are
computed against the env's actual (clipped, snapped) state, so the episode ends exactly on the
CMA best unless ``max_steps`` cuts it. Observations, rewards and terminated/truncated come from
``env.step`` itself, stored in ``agents.sac.replay``'s ``Transition`` layout; ``save_transitions``
/ ``load_transitions`` write/read them as one ``.npz`` (atomically).
The CMA search renders with ``MatchConfig.render_seed``'s key, the bank with its own fixed key;
they differ only in unison start phases and noise, so the env's rewards (the recorded ones) are
computed exactly as in training.

Behaviour cloning (``make_behaviour_cloning``): maximum likelihood of a buffer's (teacher)
actions under the actor, to warm-start SAC before its own updates.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from agents.sac import networks as nets
from agents.sac import replay
from agents.sac.config import SACConfig
from agents.sac.losses import SACState
from agents.sac.trainer import Adapter
from agents.search.cmaes import cmaes_match
from agents.search.common import MatchConfig
from jaxsynth import params as P


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
    from agents.sac.replay import synth_transition
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

    from jaxsynth.io import atomic_path
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"{path}: transitions are saved as .npz; use a name ending in .npz")
    arrays = {name: _get(transitions, name) for name in _TRANSITION_FIELDS}
    for extra in ("trajectory", "step"):
        if info is not None and extra in info:
            arrays[extra] = np.asarray(info[extra])
    arrays["format"] = np.asarray("jaxsynth-cma-transitions-v1")
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def load_transitions(path):
    """Read a file written by ``save_transitions`` -> (``replay.Transition``, extras dict)."""
    from agents.sac.replay import SynthObsStore, Transition
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


def bc_log_prob(actor, actor_params, net_obs, mask, module, delta, eps: float = 1e-4):
    """log pi_d(module|s) + log pi_c(delta|s) of teacher actions (delta clipped into the open
    interval so atanh stays finite)."""
    logits, mean, log_std = actor.apply(actor_params, net_obs, mask)
    _, logp_d = nets.categorical_probs_logprobs(logits)
    lp_d = jnp.take_along_axis(logp_d, module[..., None], axis=-1)[..., 0]
    d = jnp.clip(delta, -1 + eps, 1 - eps)
    u = jnp.arctanh(d)
    z = (u - mean) * jnp.exp(-log_std)
    lp_c = jnp.sum(-0.5 * (z ** 2 + jnp.log(2 * jnp.pi)) - log_std - jnp.log1p(-d ** 2), axis=-1)
    return lp_d, lp_c


def make_behaviour_cloning(cfg: SACConfig, adapter: Adapter, actor, n_steps: int, batch_size: int,
                           lr: float = 1e-3):
    """Pure ``bc(sac_state, buffer, key, env_params) -> (sac_state, losses)``: maximum
    likelihood of the buffer's (teacher) actions under the actor, ``n_steps`` Adam steps."""
    opt = optax.adam(lr)

    def bc(sac: SACState, buf: replay.BufferState, key, env_params):
        def loss_fn(ap, batch):
            obs_in, mask = adapter.net_input_store(batch.obs, env_params)
            lp_d, lp_c = bc_log_prob(actor, ap, obs_in, mask, batch.module, batch.delta)
            return -jnp.mean(lp_d + lp_c / adapter.n_delta)

        def step(carry, k):
            ap, os_ = carry
            batch = replay.sample(buf, k, batch_size)
            loss, g = jax.value_and_grad(loss_fn)(ap, batch)
            u, os_ = opt.update(g, os_, ap)
            return (optax.apply_updates(ap, u), os_), loss

        (ap, _), losses = jax.lax.scan(step, (sac.actor, opt.init(sac.actor)),
                                       jax.random.split(key, n_steps))
        return sac.replace(actor=ap), losses

    return bc
