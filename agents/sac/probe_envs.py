"""Tiny probe environments with a known optimal Q, to debug hybrid SAC in isolation (as rejax
does, after Andy Jones' "Debugging RL, without the agonizing pain").

All share the synth env's action interface (a module index plus a delta vector in [-1, 1]) and
gymnax 1.0's ``step -> (obs, state, reward, terminated, truncated, info)`` with auto-reset and
the pre-reset observation in ``info["next_obs"]``. Every episode is one or two steps.

kinds (Q* is with the entropy temperatures held at 0):
  constant   obs [1, 0], reward 1, terminated         Q* = 1 for every action
  obs_reward obs [+-1, 0] random, reward = obs[0]     Q*(s) = obs[0]
  two_step   obs [1,0] then [0,1]; reward 1 on step 2  Q*(s0) = gamma, Q*(s1) = 1
  truncated  obs [1, 0], reward 1, *truncated*        Q* = 1 / (1 - gamma): bootstraps through
                                                      the time limit
  action     reward = MODULE_REWARD[k] - sum_j (delta_j - DELTA_BEST_j)^2, terminated:
             Q*(s, delta, k) = MODULE_REWARD[k] - ||delta - DELTA_BEST||^2; the best allowed
             module depends on ``params.mask`` (tests the masked head).
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from agents.sac import networks as nets
from agents.sac import replay
from agents.sac.trainer import Adapter

KINDS = ("constant", "obs_reward", "two_step", "truncated", "action")
MODULE_REWARD = np.array([0.5, 0.0, 1.0], np.float32)
DELTA_BEST = np.array([0.5, -0.3], np.float32)
N_MODULES = 3
N_DELTA = 2
OBS_DIM = 2


@flax.struct.dataclass
class ProbeAction:
    module: jax.Array
    delta: jax.Array


@flax.struct.dataclass
class ProbeParams:
    mask: jax.Array  # (N_MODULES,) bool: allowed modules
    kind: jax.Array  # int32 index into KINDS (dynamic: one compiled trainer serves every probe)


@flax.struct.dataclass
class ProbeState:
    obs: jax.Array
    t: jax.Array


def probe_params(kind: str, mask=(True, True, True)) -> ProbeParams:
    if kind not in KINDS:
        raise ValueError(f"unknown probe kind {kind!r}; choose one of {KINDS}")
    return ProbeParams(jnp.asarray(mask, bool), jnp.asarray(KINDS.index(kind), jnp.int32))


@dataclass(frozen=True)
class ProbeEnv:
    """Stateless; the probe kind is in ``ProbeParams`` (see ``probe_params``)."""

    def reset(self, key, params: ProbeParams):
        sign = jnp.where(jax.random.bernoulli(key), 1.0, -1.0)
        first = jnp.array([1.0, 0.0]) * jnp.where(params.kind == KINDS.index("obs_reward"), sign, 1.0)
        state = ProbeState(first, jnp.zeros((), jnp.int32))
        return first, state

    def step(self, key, state: ProbeState, action: ProbeAction, params: ProbeParams):
        kind = params.kind
        is_ = lambda name: kind == KINDS.index(name)  # noqa: E731
        m = jnp.clip(action.module, 0, N_MODULES - 1)
        action_reward = jnp.asarray(MODULE_REWARD)[m] - jnp.sum((action.delta - DELTA_BEST) ** 2)
        reward = jnp.select([is_("obs_reward"), is_("two_step"), is_("action")],
                            [state.obs[0], jnp.where(state.t == 1, 1.0, 0.0), action_reward], 1.0)
        done_now = jnp.where(is_("two_step"), state.t == 1, True)
        next_obs = jnp.where(is_("two_step") & (state.t == 0), jnp.array([0.0, 1.0]), state.obs)
        terminated = done_now & ~is_("truncated")
        truncated = done_now & is_("truncated")
        reset_obs, reset_state = self.reset(key, params)
        stepped = ProbeState(next_obs, state.t + 1)
        new_state = jax.tree.map(lambda a, b: jnp.where(done_now, a, b), reset_state, stepped)
        obs = jnp.where(done_now, reset_obs, next_obs)
        info = {"next_obs": next_obs}
        return obs, new_state, reward.astype(jnp.float32), terminated, truncated, info


def optimal_q(kind: str, obs, gamma: float):
    """Q* of the probe (temperatures 0) for a batch of observations, any action (kinds
    without action dependence)."""
    obs = np.asarray(obs)
    if kind == "constant":
        return np.ones(obs.shape[0])
    if kind == "obs_reward":
        return obs[:, 0]
    if kind == "two_step":
        return np.where(obs[:, 0] > 0.5, gamma, 1.0)
    if kind == "truncated":
        return np.full(obs.shape[0], 1.0 / (1.0 - gamma))
    raise ValueError(f"optimal_q needs an action for kind {kind!r}")





def probe_adapter(n_eval: int = 64) -> Adapter:
    """Adapter for the probe environments (the probe kind lives in its ``ProbeParams``)."""
    env = ProbeEnv()

    def reset(keys, params):
        return jax.vmap(env.reset, in_axes=(0, None))(keys, params)

    def step(keys, state, module, delta, params):
        return jax.vmap(env.step, in_axes=(0, 0, 0, None))(keys, state, ProbeAction(module, delta),
                                                           params)

    def to_transition(obs, state, module, delta, reward, term, trunc, info, params):
        return replay.Transition(obs, module, delta, reward, term, trunc, info["next_obs"])

    def net_in(obs, params):
        mask = jnp.broadcast_to(params.mask, obs.shape[:-1] + params.mask.shape)
        return nets.NetObs(obs), mask

    def evaluate(policy, key, params):
        obs, state = reset(jax.random.split(key, n_eval), params)
        module, delta = policy(*net_in(obs, params))
        _, _, reward, _, _, _ = step(jax.random.split(key, n_eval), state, module, delta, params)
        return {"heldout_median_loss": -jnp.median(reward), "heldout_mean_reward": jnp.mean(reward)}

    example = replay.Transition(jnp.zeros(OBS_DIM), jnp.zeros((), jnp.int32),
                                jnp.zeros(N_DELTA), jnp.zeros(()), jnp.zeros((), bool),
                                jnp.zeros((), bool), jnp.zeros(OBS_DIM))
    adapter = Adapter(
        n_modules=N_MODULES, n_delta=N_DELTA, reset=reset, step=step,
        to_transition=to_transition, net_input_obs=net_in, net_input_store=net_in,
        evaluate=evaluate, stage_of=lambda p: jnp.zeros((), jnp.int32),
        with_stage=lambda p, s: p, advance=lambda s, m, p: s,
        step_metrics=lambda r, info: {"reward_mean": jnp.mean(r)}, example_transition=example)
    return adapter
