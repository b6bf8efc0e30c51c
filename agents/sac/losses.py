"""Hybrid SAC (discrete module choice + continuous delta) in PureJaxRL style.

The soft value of the hybrid policy (Delalleau et al. 2019, arXiv:1912.11077, sec. 3):

    V(s) = sum_k pi_d(k|s) [ min_i Q_i(s, D, k) - a_c log pi_c(D|s) - a_d log pi_d(k|s) ],
    D ~ pi_c(.|s) (tanh Gaussian), k over the modules the stage allows.

Critic target ``y = r + gamma (1 - terminated) V(s')`` (bootstraps through truncation, gymnax
1.0); actor loss ``E_s[-V(s)]`` through the reparameterised D; temperatures are tuned separately
to their own entropy targets (Haarnoja et al. 2018b): ``H_c* = c * n_delta`` (c = -1 by default,
the usual -dim) and ``H_d* = r * log(n_allowed)`` (a fraction of the maximum entropy of the
masked categorical).

Here: the training state (``SACState``), the pure losses (``make_losses``, Brax style) and one
gradient step (``make_update``). The compiled loop is ``agents.sac.trainer``.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from agents.sac import networks as nets
from agents.sac.config import SACConfig


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
    bc_sel = None if delta_mask is None else jnp.asarray(delta_mask, jnp.float32)
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
        return delta, logp_ck, probs, logp_d, mean

    def critic_loss(critic_params, target_params, actor_params, log_alphas, batch_in, key):
        (obs_in, mask, delta, module, reward, terminated, nobs_in, nmask) = batch_in[:8]
        a_c, a_d = jnp.exp(log_alphas[0]), jnp.exp(log_alphas[1])
        nd, nlogp_c, nprobs, nlogp_d, _ = policy_terms(actor_params, key, nobs_in, nmask)
        q_next = jnp.min(critic.apply(target_params, nobs_in, nd), axis=0)  # (B, K)
        v_next = jnp.sum(nprobs * (q_next - a_d * nlogp_d - a_c * nlogp_c), axis=-1)
        y = cfg.reward_scale * reward + cfg.gamma * (1.0 - terminated) * v_next
        y = jax.lax.stop_gradient(y)
        q = critic.apply(critic_params, obs_in, delta)  # (2, B, K)
        q_a = jnp.take_along_axis(q, module[None, :, None], axis=-1)[..., 0]  # (2, B)
        loss = 0.5 * jnp.mean(jnp.sum((q_a - y[None]) ** 2, axis=0))
        return loss, {"critic_loss": loss, "q_mean": jnp.mean(q_a), "q_target_mean": jnp.mean(y)}

    def actor_loss(actor_params, critic_params, log_alphas, obs_in, mask, key, expert=None,
                   bc_weight=0.0):
        """SAC's actor loss; with ``expert = (module, delta)`` (the ground-truth teacher's
        action on these states) plus ``bc_weight`` x the behaviour-cloning loss: cross-entropy
        of the teacher's module + mean squared error of the greedy delta ``tanh(mean)`` on the
        entries that module edits (a squared error, not the tanh-Gaussian likelihood: the
        teacher's deltas are often saturated at +-1, where that likelihood diverges)."""
        a_c, a_d = jnp.exp(log_alphas[0]), jnp.exp(log_alphas[1])
        delta, logp_ck, probs, logp_d, mean = policy_terms(actor_params, key, obs_in, mask)
        q = jnp.min(critic.apply(critic_params, obs_in, delta), axis=0)
        per_state = jnp.sum(probs * (a_d * logp_d + a_c * logp_ck - q), axis=-1)
        entropy_d = -jnp.sum(probs * logp_d, axis=-1)
        p = jax.lax.stop_gradient(probs)
        logp_c = jnp.sum(p * logp_ck, axis=-1)  # expected over the module choice
        n_c = jnp.sum(p * n_k, axis=-1)  # expected number of entries the edit moves
        loss = jnp.mean(per_state)
        aux = {"actor_loss": loss, "logp_c": logp_c, "entropy_d": entropy_d, "n_c": n_c}
        if expert is not None:
            e_module, e_delta = expert
            ce = -jnp.take_along_axis(logp_d, e_module[:, None], axis=-1)[:, 0]
            sel = jnp.ones_like(e_delta) if bc_sel is None else bc_sel[e_module]
            mse = jnp.sum(sel * (jnp.tanh(mean) - e_delta) ** 2, -1) / jnp.maximum(jnp.sum(sel, -1), 1.0)
            bc = jnp.mean(ce + mse)
            loss = loss + bc_weight * bc
            aux.update(bc_loss=bc, bc_module_acc=jnp.mean((jnp.argmax(probs, -1) == e_module).astype(jnp.float32)),
                       bc_weight=jnp.asarray(bc_weight, jnp.float32))
        return loss, aux

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
        expert, bc_w = None, 0.0
        if len(batch_in) > 8:  # the teacher's actions (trainer.batch_inputs with_expert)
            expert = (batch_in[8], batch_in[9])
            bc_w = cfg.bc_weight
            if cfg.bc_decay_updates > 0:
                bc_w = bc_w * jnp.maximum(0.0, 1.0 - state.updates.astype(jnp.float32) / cfg.bc_decay_updates)
        (_, am), ag = jax.value_and_grad(actor_loss, has_aux=True)(
            state.actor, critic_params, log_alphas, obs_in, mask, ka, expert, bc_w)
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
