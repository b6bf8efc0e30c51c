"""Hybrid SAC (discrete module choice + continuous delta) in PureJaxRL style.

The soft value of the hybrid policy (Delalleau et al. 2019, arXiv:1912.11077, sec. 3; DESIGN.md):

    V(s) = sum_k pi_d(k|s) [ min_i Q_i(s, D, k) - a_c log pi_c(D|s) - a_d log pi_d(k|s) ],
    D ~ pi_c(.|s) (tanh Gaussian), k over the modules the stage allows.

Critic target ``y = r + gamma (1 - terminated) V(s')`` (bootstraps through truncation, gymnax
1.0); actor loss ``E_s[-V(s)]`` through the reparameterised D; temperatures are tuned separately
to their own entropy targets (Haarnoja et al. 2018b): ``H_c* = c * n_delta`` (c = -1 by default,
the usual -dim) and ``H_d* = r * log(n_allowed)`` (a fraction of the maximum entropy of the
masked categorical).

Layout (Brax SAC separates networks / losses / loop; we keep losses and loop here, networks in
``agents.networks``, the buffer in ``agents.replay``):
  * ``Adapter``: what SAC needs to know about an environment (actions, what the buffer stores,
    network inputs, held-out evaluation and curriculum) -- ``synth_adapter`` in
    ``agents.sac_train``, ``probe_adapter`` here.
  * ``make_trainer(config, adapter)`` -> ``Trainer(init, chunk)``: ``init(key, env_params)``
    and ``chunk(runner, env_params)`` = ``config.steps_per_eval`` env steps (each followed by
    ``updates_per_step`` gradient updates) in one ``lax.scan``, then a held-out evaluation and
    the curriculum rule (D4). Pure; jit them; vmap over seeds.
  * ``make_train(config, adapter, env_params)`` -> pure ``train(key)``: init + a scan over
    ``config.n_evals`` chunks, the whole run one XLA program.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from agents import networks as nets
from agents import replay


@dataclass(frozen=True)
class SACConfig:
    """Static SAC settings (hashable). Env steps count steps of *all* ``n_envs`` envs."""

    n_envs: int = 64
    n_evals: int = 4  # chunks; each ends with a held-out evaluation + curriculum check
    steps_per_eval: int = 4  # env steps per chunk
    updates_per_step: int = 8  # gradient updates after each env step
    batch_size: int = 256
    buffer_capacity: int = 65536  # transitions
    learning_starts: int = 1  # first env steps act uniformly at random (masked)
    gamma: float = 0.9
    tau: float = 0.01  # Polyak rate for the target critics
    lr_actor: float = 3e-4
    lr_critic: float = 3e-4
    lr_alpha: float = 3e-3
    init_alpha_c: float = 0.05
    init_alpha_d: float = 0.05
    autotune_alpha: bool = True
    target_entropy_c_per_dim: float = -1.0
    target_entropy_d_ratio: float = 0.5
    # Continuous-head entropy measured on the delta entries the chosen module edits (the rest
    # never reach the environment) when the adapter provides ``delta_mask``; see make_losses.
    entropy_c_per_module: bool = True
    hidden: tuple[int, ...] = (256, 256)
    encoder: str = "mlp"
    reward_scale: float = 1.0
    max_grad_norm: float = 10.0
    log_mel_dtype: str = "float16"
    shard_envs: bool = True  # shard the env axis over all local devices (jax.sharding)

    def __post_init__(self):
        checks = [
            (self.n_envs >= 1, "n_envs must be >= 1"),
            (self.n_evals >= 1, "n_evals must be >= 1"),
            (self.steps_per_eval >= 1, "steps_per_eval must be >= 1"),
            (self.updates_per_step >= 0, "updates_per_step must be >= 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.buffer_capacity >= self.n_envs,
             "buffer_capacity must hold at least one env step (>= n_envs)"),
            (0.0 <= self.gamma < 1.0, "gamma must be in [0, 1)"),
            (0.0 < self.tau <= 1.0, "tau must be in (0, 1]"),
            (self.encoder in ("mlp", "cnn"), "encoder must be 'mlp' or 'cnn'"),
            (self.log_mel_dtype in replay.LOG_MEL_DTYPES,
             f"log_mel_dtype must be one of {tuple(replay.LOG_MEL_DTYPES)}"),
            (self.init_alpha_c > 0 and self.init_alpha_d > 0, "initial temperatures must be > 0"),
            (len(self.hidden) >= 1, "hidden needs at least one layer"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"SACConfig: {msg}")

    @property
    def total_env_steps(self) -> int:
        return self.n_evals * self.steps_per_eval

    @property
    def total_transitions(self) -> int:
        return self.total_env_steps * self.n_envs


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
    advance(stage, median_loss, env_params) -> stage (curriculum rule, D4)
    step_metrics(reward, info) -> dict of scalars logged every env step
    example_transition: unbatched Transition for the buffer layout
    delta_mask: (n_modules, n_delta) bool, the delta entries each module edits (None: all)
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


@flax.struct.dataclass
class SACState:
    actor: Any
    critic: Any
    target_critic: Any
    log_alpha_c: jax.Array
    log_alpha_d: jax.Array
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any
    updates: jax.Array


@flax.struct.dataclass
class Runner:
    sac: SACState
    buffer: replay.BufferState
    env_state: Any
    obs: Any
    stage: jax.Array
    env_steps: jax.Array  # env steps of all envs taken so far
    key: jax.Array


class Trainer(NamedTuple):
    init: Callable  # (key, env_params) -> Runner
    chunk: Callable  # (runner, env_params) -> (runner, metrics)
    evaluate: Callable  # (runner, env_params) -> held-out metrics of the greedy policy
    networks: tuple  # (actor, critic) flax modules
    config: SACConfig


def _optimizers(cfg: SACConfig):
    def opt(lr):
        return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(lr))
    return opt(cfg.lr_actor), opt(cfg.lr_critic), optax.adam(cfg.lr_alpha)


def init_sac_state(key, cfg: SACConfig, actor, critic, net_obs, mask) -> SACState:
    """Parameters and optimiser states from one example input (unbatched ``net_obs``)."""
    ka, kc = jax.random.split(key)
    ap = actor.init(ka, net_obs, mask)
    delta = jnp.zeros((actor.n_delta,), jnp.float32)
    cp = critic.init(kc, net_obs, delta)
    a_opt, c_opt, al_opt = _optimizers(cfg)
    log_alphas = (jnp.log(jnp.float32(cfg.init_alpha_c)), jnp.log(jnp.float32(cfg.init_alpha_d)))
    return SACState(ap, cp, cp, *log_alphas, a_opt.init(ap), c_opt.init(cp),
                    al_opt.init(log_alphas), jnp.zeros((), jnp.int32))


def make_losses(cfg: SACConfig, actor, critic, delta_mask=None):
    """Pure loss functions (Brax style): critic, actor and temperature losses on a batch of
    network inputs. Each returns (loss, aux metrics).

    ``delta_mask`` (n_modules, n_delta): with ``cfg.entropy_c_per_module`` the continuous
    log-density paid with module k is that of the delta entries module k edits,
    ``log pi_c(D_k|s)``, and the entropy target is ``c * E_k[n_k]`` (expected number of edited
    entries). Entries the chosen module does not edit never reach the environment; counting
    them (33 dims for the synth, 4-5 of them used) lets their free, maximal entropy satisfy
    the target, so alpha_c decays to ~0 and the entries that act collapse to a deterministic
    delta (measured: alpha_c 0.05 -> 0.003 in 1k updates, RESULTS.md "SAC training")."""
    n_delta = actor.n_delta
    dm = None
    if delta_mask is not None and cfg.entropy_c_per_module:
        dm = jnp.asarray(delta_mask, jnp.float32)  # (K, D)
    n_k = (jnp.full((actor.n_modules,), float(n_delta)) if dm is None else jnp.sum(dm, axis=-1))

    def policy_terms(actor_params, key, net_obs, mask):
        """delta, per-module continuous log-density (B, K), module probs and log-probs."""
        logits, mean, log_std = actor.apply(actor_params, net_obs, mask)
        delta, logp_dims = nets.tanh_gaussian_sample(key, mean, log_std, per_dim=True)
        if dm is None:
            logp_ck = jnp.broadcast_to(jnp.sum(logp_dims, -1, keepdims=True), logits.shape)
        else:
            logp_ck = logp_dims @ dm.T
        probs, logp_d = nets.categorical_probs_logprobs(logits)
        return delta, logp_ck, probs, logp_d

    def critic_loss(critic_params, target_params, actor_params, log_alphas, batch_in, key):
        (obs_in, mask, delta, module, reward, terminated, nobs_in, nmask) = batch_in
        a_c, a_d = jnp.exp(log_alphas[0]), jnp.exp(log_alphas[1])
        nd, nlogp_c, nprobs, nlogp_d = policy_terms(actor_params, key, nobs_in, nmask)
        q_next = jnp.min(critic.apply(target_params, nobs_in, nd), axis=0)  # (B, K)
        v_next = jnp.sum(nprobs * (q_next - a_d * nlogp_d - a_c * nlogp_c), axis=-1)
        y = cfg.reward_scale * reward + cfg.gamma * (1.0 - terminated) * v_next
        y = jax.lax.stop_gradient(y)
        q = critic.apply(critic_params, obs_in, delta)  # (2, B, K)
        q_a = jnp.take_along_axis(q, module[None, :, None], axis=-1)[..., 0]  # (2, B)
        loss = 0.5 * jnp.mean(jnp.sum((q_a - y[None]) ** 2, axis=0))
        return loss, {"critic_loss": loss, "q_mean": jnp.mean(q_a), "q_target_mean": jnp.mean(y)}

    def actor_loss(actor_params, critic_params, log_alphas, obs_in, mask, key):
        a_c, a_d = jnp.exp(log_alphas[0]), jnp.exp(log_alphas[1])
        delta, logp_ck, probs, logp_d = policy_terms(actor_params, key, obs_in, mask)
        q = jnp.min(critic.apply(critic_params, obs_in, delta), axis=0)
        per_state = jnp.sum(probs * (a_d * logp_d + a_c * logp_ck - q), axis=-1)
        entropy_d = -jnp.sum(probs * logp_d, axis=-1)
        p = jax.lax.stop_gradient(probs)
        logp_c = jnp.sum(p * logp_ck, axis=-1)  # expected over the module choice
        n_c = jnp.sum(p * n_k, axis=-1)  # expected number of entries the edit moves
        loss = jnp.mean(per_state)
        return loss, {"actor_loss": loss, "logp_c": logp_c, "entropy_d": entropy_d, "n_c": n_c}

    def alpha_loss(log_alphas, logp_c, entropy_d, mask, n_c):
        n_allowed = jnp.maximum(jnp.sum(mask, axis=-1), 1)
        target_c = cfg.target_entropy_c_per_dim * n_c
        target_d = cfg.target_entropy_d_ratio * jnp.log(n_allowed.astype(jnp.float32))
        loss_c = -log_alphas[0] * jnp.mean(jax.lax.stop_gradient(logp_c + target_c))
        loss_d = log_alphas[1] * jnp.mean(jax.lax.stop_gradient(entropy_d - target_d))
        return loss_c + loss_d, {"entropy_c_est": -jnp.mean(logp_c), "entropy_d": jnp.mean(entropy_d),
                                 "target_entropy_c": jnp.mean(target_c),
                                 "target_entropy_d": jnp.mean(target_d)}

    return critic_loss, actor_loss, alpha_loss


def make_update(cfg: SACConfig, actor, critic, delta_mask=None):
    """One SAC gradient step on a batch of network inputs -> (new state, metrics)."""
    critic_loss, actor_loss, alpha_loss = make_losses(cfg, actor, critic, delta_mask)
    a_opt, c_opt, al_opt = _optimizers(cfg)

    def update(state: SACState, batch_in, key) -> tuple[SACState, dict]:
        kc, ka = jax.random.split(key)
        log_alphas = (state.log_alpha_c, state.log_alpha_d)
        (_, cm), cg = jax.value_and_grad(critic_loss, has_aux=True)(
            state.critic, state.target_critic, state.actor, log_alphas, batch_in, kc)
        cu, c_opt_state = c_opt.update(cg, state.critic_opt, state.critic)
        critic_params = optax.apply_updates(state.critic, cu)

        obs_in, mask = batch_in[0], batch_in[1]
        (_, am), ag = jax.value_and_grad(actor_loss, has_aux=True)(
            state.actor, critic_params, log_alphas, obs_in, mask, ka)
        au, a_opt_state = a_opt.update(ag, state.actor_opt, state.actor)
        actor_params = optax.apply_updates(state.actor, au)

        (_, tm), tg = jax.value_and_grad(alpha_loss, has_aux=True)(
            log_alphas, am.pop("logp_c"), am.pop("entropy_d"), mask, am.pop("n_c"))
        tu, al_opt_state = al_opt.update(tg, state.alpha_opt, log_alphas)
        new_log_alphas = optax.apply_updates(log_alphas, tu)
        if not cfg.autotune_alpha:
            new_log_alphas, al_opt_state = log_alphas, state.alpha_opt

        target = optax.incremental_update(critic_params, state.target_critic, cfg.tau)
        new = SACState(actor_params, critic_params, target, new_log_alphas[0], new_log_alphas[1],
                       a_opt_state, c_opt_state, al_opt_state, state.updates + 1)
        metrics = {**cm, **am, **tm, "alpha_c": jnp.exp(new_log_alphas[0]),
                   "alpha_d": jnp.exp(new_log_alphas[1])}
        return new, metrics

    return update


def batch_inputs(adapter: Adapter, batch: replay.Transition, env_params):
    """Network inputs for a sampled batch (observations rebuilt from what the buffer stores)."""
    obs_in, mask = adapter.net_input_store(batch.obs, env_params)
    nobs_in, nmask = adapter.net_input_store(batch.next_obs, env_params)
    return (obs_in, mask, batch.delta, batch.module, batch.reward,
            batch.terminated.astype(jnp.float32), nobs_in, nmask)


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

    def init(key, env_params) -> Runner:
        k_env, k_net, k_run = jax.random.split(key, 3)
        obs, env_state = adapter.reset(jax.random.split(k_env, E), env_params)
        obs, env_state = _constrain((obs, env_state), sharding, E)
        net_obs, mask = adapter.net_input_obs(obs, env_params)
        one = jax.tree.map(lambda x: x[0], (net_obs, mask))
        sac = init_sac_state(k_net, cfg, actor, critic, *one)
        buf = replay.init(adapter.example_transition, cfg.buffer_capacity)
        return Runner(sac, buf, env_state, obs, adapter.stage_of(env_params),
                      jnp.zeros((), jnp.int32), k_run)

    def env_and_updates(runner: Runner, env_params):
        env_params = adapter.with_stage(env_params, runner.stage)
        key, k_act, k_step, k_upd = jax.random.split(runner.key, 4)
        net_obs, mask = adapter.net_input_obs(runner.obs, env_params)
        uniform = runner.env_steps < cfg.learning_starts
        module, delta = sample_actions(actor, runner.sac.actor, k_act, net_obs, mask, uniform)
        obs, env_state, reward, term, trunc, info = adapter.step(
            jax.random.split(k_step, E), runner.env_state, module, delta, env_params)
        obs, env_state = _constrain((obs, env_state), sharding, E)
        tr = adapter.to_transition(runner.obs, runner.env_state, module, delta, reward, term,
                                   trunc, info, env_params)
        buf = replay.add(runner.buffer, tr)

        def one_update(sac, k):
            ks, ku = jax.random.split(k)
            batch = replay.sample(buf, ks, cfg.batch_size)
            return update(sac, batch_inputs(adapter, batch, env_params), ku)

        sac, upd_metrics = jax.lax.scan(one_update, runner.sac,
                                        jax.random.split(k_upd, cfg.updates_per_step))
        metrics = {k: jnp.mean(v) for k, v in upd_metrics.items()}
        metrics.update(adapter.step_metrics(reward, info))
        metrics["terminated_frac"] = jnp.mean(term.astype(jnp.float32))
        runner = Runner(sac, buf, env_state, obs, runner.stage, runner.env_steps + 1, key)
        return runner, metrics

    def chunk(runner: Runner, env_params):
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


# ---------------------------------------------------------------------------------------
# Warm start (D5): behaviour cloning on teacher transitions


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


# ---------------------------------------------------------------------------------------
# Probe-environment adapter (tests, debugging)


def probe_adapter(n_eval: int = 64) -> Adapter:
    """Adapter for ``agents.probe_envs`` (the probe kind lives in its ``ProbeParams``)."""
    from agents import probe_envs as pe

    env = pe.ProbeEnv()

    def reset(keys, params):
        return jax.vmap(env.reset, in_axes=(0, None))(keys, params)

    def step(keys, state, module, delta, params):
        return jax.vmap(env.step, in_axes=(0, 0, 0, None))(keys, state, pe.ProbeAction(module, delta),
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

    example = replay.Transition(jnp.zeros(pe.OBS_DIM), jnp.zeros((), jnp.int32),
                                jnp.zeros(pe.N_DELTA), jnp.zeros(()), jnp.zeros((), bool),
                                jnp.zeros((), bool), jnp.zeros(pe.OBS_DIM))
    adapter = Adapter(
        n_modules=pe.N_MODULES, n_delta=pe.N_DELTA, reset=reset, step=step,
        to_transition=to_transition, net_input_obs=net_in, net_input_store=net_in,
        evaluate=evaluate, stage_of=lambda p: jnp.zeros((), jnp.int32),
        with_stage=lambda p, s: p, advance=lambda s, m, p: s,
        step_metrics=lambda r, info: {"reward_mean": jnp.mean(r)}, example_transition=example)
    return adapter
