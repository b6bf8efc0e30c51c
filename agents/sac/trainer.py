"""The compiled SAC trainer, PureJaxRL style.

  * ``Adapter``: what SAC needs to know about an environment (actions, what the buffer stores,
    network inputs, held-out evaluation and curriculum) -- ``agents.sac.synth_adapter`` for the
    synth, ``agents.sac.probe_envs.probe_adapter`` for the probe environments.
  * ``make_trainer(config, adapter)`` -> ``Trainer(init, chunk)``: ``init(key, env_params)``
    and ``chunk(runner, env_params)`` = ``config.steps_per_eval`` env steps (each followed by
    ``updates_per_step`` gradient updates, ``agents.sac.losses.make_update``) in one
    ``lax.scan``, then a held-out evaluation and the curriculum rule (promote when the median
    held-out loss drops below the stage threshold). Pure; jit them; vmap over seeds.
  * ``make_train(config, adapter, env_params)`` -> pure ``train(key)``: init + a scan over
    ``config.n_evals`` chunks, the whole run one XLA program.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from agents.sac import networks as nets
from agents.sac import replay
from agents.sac.config import SACConfig
from agents.sac.losses import SACState, init_sac_state, make_update


@dataclass(frozen=True, eq=False)
class Adapter:
    """What SAC needs from an environment (pure functions; batched over a leading env axis
    where noted).

    reset(keys (E,), env_params) -> (obs, env_state)                 batched
    step(keys, env_state, module, delta, env_params)
        -> (obs, env_state, reward, terminated, truncated, info)     batched, auto-reset
    to_transition(obs, env_state, module, delta, reward, terminated, truncated, info,
                  env_params) -> replay.Transition                   batched
    net_input_obs(obs, env_params) -> (NetObs, mask)                 live observation
    net_input_store(stored, env_params) -> (NetObs, mask)            from the buffer
    evaluate(policy, key, env_params) -> dict of scalars incl. "heldout_median_loss"
        ``policy(net_obs, mask) -> (module, delta)`` is the greedy policy.
    stage_of(env_params) -> int32 ; with_stage(env_params, stage) -> env_params
    advance(stage, median_loss, env_params) -> stage (the curriculum's promotion rule)
    step_metrics(reward, info) -> dict of scalars logged every env step
    example_transition: unbatched Transition for the buffer layout
    delta_mask: (n_modules, n_delta) bool, the delta entries each module edits (None: all)

    Optional, for environments that draw fresh episodes inside the program:
    init_extra(env_params) -> extra          adapter state carried in the Runner
    begin_episode(key, extra, env_params) -> (extra, episode_params, obs, env_state)
        starts a new episode in every env (e.g. fresh targets rendered now); the chunk then
        runs ``episode_steps`` env steps with ``episode_params`` (so ``steps_per_eval`` must
        be a multiple of ``episode_steps``) and samples updates with them.
    expert(stored_obs, env_params) -> (module, delta)
        a teacher's action on stored states (behaviour cloning on the learner's own states,
        ``SACConfig.bc_weight``).
    """

    n_modules: int
    n_delta: int
    reset: Callable
    step: Callable
    to_transition: Callable
    net_input_obs: Callable
    net_input_store: Callable
    evaluate: Callable
    stage_of: Callable
    with_stage: Callable
    advance: Callable
    step_metrics: Callable
    example_transition: Any
    delta_mask: Any = None  # (n_modules, n_delta) bool: entries module k edits; None = all
    init_extra: Callable | None = None
    begin_episode: Callable | None = None
    episode_steps: int = 0
    expert: Callable | None = None


@flax.struct.dataclass
class Runner:
    sac: SACState
    buffer: replay.BufferState
    env_state: Any
    obs: Any
    stage: jax.Array
    env_steps: jax.Array  # env steps of all envs taken so far
    key: jax.Array
    extra: Any = None  # adapter state (Adapter.init_extra), e.g. the fresh targets' ring


class Trainer(NamedTuple):
    init: Callable  # (key, env_params) -> Runner
    chunk: Callable  # (runner, env_params) -> (runner, metrics)
    evaluate: Callable  # (runner, env_params) -> held-out metrics of the greedy policy
    networks: tuple  # (actor, critic) flax modules
    config: SACConfig


def batch_inputs(adapter: Adapter, batch: replay.Transition, env_params, with_expert: bool = False):
    """Network inputs for a sampled batch (observations rebuilt from what the buffer stores);
    with ``with_expert`` also the teacher's (module, delta) on the batch's states."""
    obs_in, mask = adapter.net_input_store(batch.obs, env_params)
    nobs_in, nmask = adapter.net_input_store(batch.next_obs, env_params)
    out = (obs_in, mask, batch.delta, batch.module, batch.reward,
           batch.terminated.astype(jnp.float32), nobs_in, nmask)
    if with_expert:
        out = out + tuple(adapter.expert(batch.obs, env_params))
    return out


def greedy_policy(actor, actor_params):
    """Deterministic policy for evaluation: argmax module (masked), tanh(mean) delta."""
    def policy(net_obs, mask):
        logits, mean, _ = actor.apply(actor_params, net_obs, mask)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), jnp.tanh(mean)
    return policy


def sample_actions(actor, actor_params, key, net_obs, mask, uniform):
    """Exploration actions: from the policy, or (``uniform`` True) uniformly among allowed
    modules with delta ~ U(-1, 1). Locked modules have probability exactly 0 either way."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    logits, mean, log_std = actor.apply(actor_params, net_obs, mask)
    module_pi = jax.random.categorical(k1, logits, axis=-1)
    delta_pi, _ = nets.tanh_gaussian_sample(k2, mean, log_std)
    uni_logits = nets.masked_logits(jnp.zeros_like(logits), mask)
    module_u = jax.random.categorical(k3, uni_logits, axis=-1)
    delta_u = jax.random.uniform(k4, delta_pi.shape, minval=-1.0, maxval=1.0)
    module = jnp.where(uniform, module_u, module_pi).astype(jnp.int32)
    delta = jnp.where(uniform, delta_u, delta_pi)
    return module, delta


def env_sharding(cfg: SACConfig):
    """NamedSharding that splits the leading env axis over all local devices, or None.
    Multi-host: call ``jax.distributed.initialize()`` first; ``jax.devices()`` then spans all
    hosts and XLA's SPMD partitioner does the rest (each host feeds its own shard)."""
    devices = jax.devices()
    if not cfg.shard_envs or len(devices) == 1:
        return None
    if cfg.n_envs % len(devices):
        raise ValueError(f"n_envs={cfg.n_envs} must be divisible by the {len(devices)} devices "
                         "to shard envs; change --envs or pass --no-shard")
    mesh = Mesh(np.array(devices), ("envs",))
    return NamedSharding(mesh, PartitionSpec("envs"))


def env_parallel(step, sharding):
    """``step(keys, env_state, module, delta, env_params)`` run by every device on its own envs
    (``jax.shard_map``): each env-batched argument and output is split along the env axis,
    ``env_params`` is replicated. Envs are independent, so no collective is needed, and XLA's
    SPMD partitioner never sees the render and the features (on the CPU backend it gave the
    FFT a layout its runtime rejects: jax/jaxlib 0.10.2, 2 forced host devices)."""
    envs, rep = sharding.spec, jax.sharding.PartitionSpec()
    return jax.shard_map(step, mesh=sharding.mesh, in_specs=(envs, envs, envs, envs, rep),
                         out_specs=envs, check_vma=False)


def _constrain(tree, sharding, n_envs):
    if sharding is None:
        return tree
    def c(x):
        if hasattr(x, "shape") and x.ndim >= 1 and x.shape[0] == n_envs:
            return jax.lax.with_sharding_constraint(x, sharding)
        return x
    return jax.tree.map(c, tree)


def make_trainer(cfg: SACConfig, adapter: Adapter) -> Trainer:
    actor = nets.Actor(adapter.n_modules, adapter.n_delta, cfg.encoder, cfg.hidden)
    critic = nets.TwinCritic(adapter.n_modules, cfg.encoder, cfg.hidden)
    update = make_update(cfg, actor, critic, adapter.delta_mask)
    sharding = env_sharding(cfg)
    E = cfg.n_envs
    step_envs = adapter.step if sharding is None else env_parallel(adapter.step, sharding)
    with_expert = cfg.bc_weight > 0
    if with_expert and adapter.expert is None:
        raise ValueError("SACConfig.bc_weight > 0 needs an adapter with a teacher (Adapter.expert)")
    episodic = adapter.begin_episode is not None
    if episodic and cfg.steps_per_eval % adapter.episode_steps:
        raise ValueError(f"fresh episodes are drawn per episode of {adapter.episode_steps} steps: "
                         f"steps per chunk ({cfg.steps_per_eval}) must be a multiple of it")

    def init(key, env_params) -> Runner:
        k_env, k_net, k_run = jax.random.split(key, 3)
        obs, env_state = adapter.reset(jax.random.split(k_env, E), env_params)
        obs, env_state = _constrain((obs, env_state), sharding, E)
        net_obs, mask = adapter.net_input_obs(obs, env_params)
        one = jax.tree.map(lambda x: x[0], (net_obs, mask))
        sac = init_sac_state(k_net, cfg, actor, critic, *one)
        buf = replay.init(adapter.example_transition, cfg.buffer_capacity)
        extra = adapter.init_extra(env_params) if adapter.init_extra is not None else None
        return Runner(sac, buf, env_state, obs, adapter.stage_of(env_params),
                      jnp.zeros((), jnp.int32), k_run, extra)

    def env_and_updates(runner: Runner, env_params):
        env_params = adapter.with_stage(env_params, runner.stage)
        key, k_act, k_step, k_upd = jax.random.split(runner.key, 4)
        net_obs, mask = adapter.net_input_obs(runner.obs, env_params)
        uniform = runner.env_steps < cfg.learning_starts
        module, delta = sample_actions(actor, runner.sac.actor, k_act, net_obs, mask, uniform)
        obs, env_state, reward, term, trunc, info = step_envs(
            jax.random.split(k_step, E), runner.env_state, module, delta, env_params)
        obs, env_state = _constrain((obs, env_state), sharding, E)
        tr = adapter.to_transition(runner.obs, runner.env_state, module, delta, reward, term,
                                   trunc, info, env_params)
        buf = replay.add(runner.buffer, tr)

        def one_update(sac, k):
            ks, ku = jax.random.split(k)
            batch = replay.sample(buf, ks, cfg.batch_size)
            return update(sac, batch_inputs(adapter, batch, env_params, with_expert), ku)

        sac, upd_metrics = jax.lax.scan(one_update, runner.sac,
                                        jax.random.split(k_upd, cfg.updates_per_step))
        metrics = {k: jnp.mean(v) for k, v in upd_metrics.items()}
        metrics.update(adapter.step_metrics(reward, info))
        metrics["terminated_frac"] = jnp.mean(term.astype(jnp.float32))
        runner = Runner(sac, buf, env_state, obs, runner.stage, runner.env_steps + 1, key, runner.extra)
        return runner, metrics

    def episode(runner: Runner, env_params):
        """A new episode in every env (adapter.begin_episode), then its steps."""
        key, k_ep = jax.random.split(runner.key)
        extra, p_ep, obs, env_state = adapter.begin_episode(
            k_ep, runner.extra, adapter.with_stage(env_params, runner.stage))
        obs, env_state = _constrain((obs, env_state), sharding, E)
        runner = runner.replace(extra=extra, obs=obs, env_state=env_state, key=key)
        return jax.lax.scan(lambda r, _: env_and_updates(r, p_ep), runner, None,
                            length=adapter.episode_steps)

    def chunk(runner: Runner, env_params):
        if episodic:
            runner, step_metrics = jax.lax.scan(lambda r, _: episode(r, env_params), runner, None,
                                                length=cfg.steps_per_eval // adapter.episode_steps)
            step_metrics = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), step_metrics)
        else:
            runner, step_metrics = jax.lax.scan(lambda r, _: env_and_updates(r, env_params),
                                                runner, None, length=cfg.steps_per_eval)
        key, k_eval = jax.random.split(runner.key)
        p = adapter.with_stage(env_params, runner.stage)
        ev = adapter.evaluate(greedy_policy(actor, runner.sac.actor), k_eval, p)
        new_stage = adapter.advance(runner.stage, ev["heldout_median_loss"], p)
        ev = dict(ev, stage=runner.stage, next_stage=new_stage, env_steps=runner.env_steps + 0,
                  updates=runner.sac.updates + 0, buffer_size=runner.buffer.size + 0)
        runner = runner.replace(stage=new_stage, key=key)
        return runner, {"steps": step_metrics, "eval": ev}

    def evaluate(runner: Runner, env_params):
        p = adapter.with_stage(env_params, runner.stage)
        return adapter.evaluate(greedy_policy(actor, runner.sac.actor),
                                jax.random.fold_in(runner.key, 1), p)

    return Trainer(init, chunk, evaluate, (actor, critic), cfg)


def make_train(cfg: SACConfig, adapter: Adapter, env_params) -> Callable:
    """PureJaxRL-style pure ``train(key) -> (runner, metrics)``: the whole run (all chunks)
    in one scan; ``jax.jit(jax.vmap(train))(keys)`` trains several seeds at once."""
    trainer = make_trainer(cfg, adapter)

    def train(key, params=None):
        """``params`` overrides the env params given to ``make_train`` (pass them to ``jit`` as
        an argument so that large arrays such as the target bank are not baked in as constants)."""
        p = env_params if params is None else params
        runner = trainer.init(key, p)
        return jax.lax.scan(lambda r, _: trainer.chunk(r, p), runner, None, length=cfg.n_evals)

    return train
