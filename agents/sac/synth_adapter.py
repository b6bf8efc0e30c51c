"""Connects hybrid SAC (``agents.sac.trainer``) to the sound-matching environment (``agents.env``).

What the buffer stores per transition is ``replay.SynthObsStore`` (current log-mel in a compact
dtype, params01, target index, stage); ``net_input_store`` rebuilds the observation with
``SynthMatchEnv.obs_from`` (target log-mel gathered from the bank) and the stage's module
mask. Network input: ``NetObs(flat=[params01, mask], image=[current, target, delta] log-mels
as 3 channels, dB scaled by ``env.scale_obs``)`` -- the MLP encoder flattens it to exactly the
contents of ``env.flatten_obs``; the CNN encoder convolves the image.

Held-out evaluation (for the curriculum's promotion rule): ``SynthTrainParams.heldout`` is a
``TargetBank`` of
``curriculum.heldout_presets`` (never trained on) with the training bank's start presets;
each held-out target gets one greedy episode of ``max_steps`` edits from start preset 0 (from
its own start in a paired bank: the amortized network's guess when training starts there), and
the median over targets of the episode's BEST matching loss (the preset a matcher would return,
as CMA-ES returns its best-so-far; the start preset counts) is the curriculum statistic. The
median final loss is logged too (``heldout_median_final_loss``): early in training the policy
finds good presets and then overshoots, so final-loss curves are much noisier (RESULTS.md).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from agents import curriculum as C
from agents import env as E
from agents.env.expert import expert_action
from agents.env.fresh_targets import fresh_bank
from agents.sac import networks as nets
from agents.sac import replay
from agents.sac.trainer import Adapter
from jaxsynth import params as P


@flax.struct.dataclass
class SynthTrainParams:
    env: E.EnvParams
    heldout: E.TargetBank  # (n_stages, n_heldout, ...) held-out targets, same start presets
    ring: replay.TargetRing | None = None  # fresh targets: what stored target indices point to
    ring_offset: jax.Array | None = None  # first ring row of the current episode's targets


def net_input(obs: E.Obs):
    o = E.scale_obs(obs)
    image = jnp.stack([o.current_log_mel, o.target_log_mel, o.delta_log_mel], axis=-1)
    flat = jnp.concatenate([o.params01, o.module_mask.astype(jnp.float32)], axis=-1)
    return nets.NetObs(flat.astype(jnp.float32), image.astype(jnp.float32)), obs.module_mask


def heldout_episode(env: E.SynthMatchEnv, policy, p: SynthTrainParams):
    """One greedy episode per held-out target of the current stage: per-step losses
    (max_steps, n) and the final params01 (n, N_PARAMS)."""
    hb, stage = p.heldout, jnp.clip(p.env.stage, 0, C.N_STAGES - 1)
    n = hb.bank_size
    ep = p.env.replace(bank=hb)
    if hb.paired:  # one start per target (e.g. the amortized network's guess of it)
        loss0, start01, start_mel = hb.start_loss[stage, :, 0], hb.start_params01[stage], hb.start_log_mel[stage]
    else:
        loss0 = hb.start_loss[stage, 0]
        start01 = jnp.broadcast_to(hb.start_params01[stage, 0], (n, P.N_PARAMS))
        start_mel = jnp.broadcast_to(hb.start_log_mel[stage, 0], (n,) + hb.log_mel.shape[2:])
    state = E.EnvState(params01=start01,
                       target_index=(stage * n + jnp.arange(n)).astype(jnp.int32),
                       current_log_mel=start_mel,
                       loss=loss0, best_loss=loss0, initial_loss=loss0, step=jnp.zeros((n,), jnp.int32))
    get_obs = jax.vmap(env.get_obs, in_axes=(0, None))
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def body(st, k):
        module, delta = policy(*net_input(get_obs(st, ep)))
        _, st2, _, _, _, info = step(jax.random.split(k, n), st, E.Action(module, delta), ep)
        return st2, (info["loss"], info["next_params01"])

    _, (losses, params01) = jax.lax.scan(body, state, jax.random.split(jax.random.PRNGKey(0),
                                                                       env.config.max_steps))
    return loss0, losses, params01[-1]


def _ring_obs(env: E.SynthMatchEnv, ring: replay.TargetRing, mel, p01, ti, stage) -> E.Obs:
    """``SynthMatchEnv.obs_from`` with the target taken from the ring."""
    target = ring.log_mel[ti].astype(jnp.float32)
    mask = jnp.asarray(C.stage_module_masks())[jnp.clip(stage, 0, C.N_STAGES - 1)]
    return E.Obs(current_log_mel=mel, target_log_mel=target, delta_log_mel=mel - target,
                 params01=p01, module_mask=mask)


def synth_adapter(env: E.SynthMatchEnv, log_mel_dtype: str = "float16", *, fresh: bool = False,
                  n_envs: int = 0, buffer_capacity: int = 0, start_fn=None,
                  teacher: bool = False) -> Adapter:
    """The adapter. ``fresh``: a new target per env and episode, drawn and rendered inside the
    program (``agents.env.fresh_targets``), the start from ``start_fn`` (None: the bank's start
    presets); transitions then point into a ``replay.TargetRing`` (needs ``n_envs`` and
    ``buffer_capacity``). ``teacher``: provide the ground-truth teacher's action on stored
    states (``agents.env.expert``) for behaviour cloning."""
    cfg = env.config
    dt = replay.LOG_MEL_DTYPES[log_mel_dtype]
    if fresh and (n_envs < 1 or buffer_capacity < 1):
        raise ValueError("synth_adapter(fresh=True) needs n_envs and buffer_capacity")
    n_slots = replay.ring_slots(buffer_capacity, n_envs, cfg.max_steps) if fresh else 0
    v_reset_to = jax.vmap(env.reset_to, in_axes=(0, 0, None))
    v_reset = jax.vmap(env.reset, in_axes=(0, None))
    v_step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def reset(keys, p):
        return v_reset(keys, p.env)

    def step(keys, state, module, delta, p):
        return v_step(keys, state, E.Action(module, delta), p.env)

    def to_transition(obs, state, module, delta, reward, term, trunc, info, p):
        ti = state.target_index if p.ring is None else state.target_index + p.ring_offset
        return replay.synth_transition(obs.current_log_mel, obs.params01, ti,
                                       p.env.stage, module, delta, reward, term, trunc,
                                       info["next_log_mel"], info["next_params01"], log_mel_dtype)

    def net_input_obs(obs, p):
        return net_input(obs)

    def net_input_store(stored: replay.SynthObsStore, p):
        def one(mel, p01, ti, stage):
            if p.ring is not None:
                return _ring_obs(env, p.ring, mel.astype(jnp.float32), p01, ti, stage)
            return env.obs_from(mel.astype(jnp.float32), p01, ti, p.env.replace(stage=stage))
        return net_input(jax.vmap(one)(stored.log_mel, stored.params01, stored.target_index, stored.stage))

    def evaluate(policy, key, p):
        loss0, losses, final_params = heldout_episode(env, policy, p)
        final = losses[-1]
        best = jnp.minimum(jnp.min(losses, axis=0), loss0)
        return {"heldout_median_loss": jnp.median(best),
                "heldout_median_final_loss": jnp.median(final),
                "heldout_median_start_loss": jnp.median(loss0),
                "heldout_final_loss": final, "heldout_final_params01": final_params}


    def step_metrics(reward, info):
        m = {"reward_mean": jnp.mean(reward), "loss_mean": jnp.mean(info["loss"]),
             "best_loss_mean": jnp.mean(info["best_loss"]),
             "edit_allowed_frac": jnp.mean(info["edit_allowed"].astype(jnp.float32)),
             "edit_norm": jnp.mean(jnp.linalg.norm(info["applied_delta"], axis=-1))}
        for name, v in info["reward_terms"]._asdict().items():
            m[f"reward/{name}"] = jnp.mean(v)
        for name, v in info["loss_terms"]._asdict().items():
            m[f"loss_terms/{name}"] = jnp.mean(v)
        return m

    def init_extra(p):
        fixed = p.env.bank
        n_fixed = fixed.n_stages * fixed.bank_size
        rows = n_fixed + n_slots * n_envs
        mel = jnp.zeros((rows, cfg.num_frames, cfg.n_mels), dt)
        mel = mel.at[:n_fixed].set(fixed.log_mel.reshape((n_fixed,) + mel.shape[1:]).astype(dt))
        p01 = jnp.zeros((rows, P.N_PARAMS), jnp.float32).at[:n_fixed].set(fixed.params01.reshape(n_fixed, -1))
        return replay.TargetRing(mel, p01, jnp.zeros((), jnp.int32))

    def begin_episode(key, ring: replay.TargetRing, p):
        fb = fresh_bank(key, p.env.stage, n_envs, cfg, p.env.bank, start_fn)
        n_fixed = ring.rows - n_slots * n_envs
        off = (n_fixed + ring.slot * n_envs).astype(jnp.int32)
        ring = replay.TargetRing(
            jax.lax.dynamic_update_slice(ring.log_mel, fb.log_mel[0].astype(dt), (off, 0, 0)),
            jax.lax.dynamic_update_slice(ring.params01, fb.params01[0], (off, 0)),
            (ring.slot + 1) % n_slots)
        p_ep = p.replace(env=p.env.replace(bank=fb), ring=ring, ring_offset=off)
        idx = jnp.arange(n_envs)
        obs, state = v_reset_to(idx, idx, p_ep.env)
        return ring, p_ep, obs, state

    def expert(stored: replay.SynthObsStore, p):
        if p.ring is not None:
            target01 = p.ring.params01[stored.target_index]
        else:
            target01 = p.env.bank.params01.reshape(-1, P.N_PARAMS)[stored.target_index]
        return jax.vmap(expert_action, in_axes=(0, 0, 0, None, None))(
            stored.params01, target01, stored.stage, p.env.max_delta, cfg.note)

    example = replay.example_synth_transition(cfg.num_frames, cfg.n_mels, log_mel_dtype)
    return Adapter(
        n_modules=P.N_MODULES, n_delta=P.N_PARAMS, reset=reset, step=step, to_transition=to_transition,
        net_input_obs=net_input_obs, net_input_store=net_input_store, evaluate=evaluate,
        stage_of=lambda p: p.env.stage,
        with_stage=lambda p, s: p.replace(env=p.env.replace(stage=jnp.asarray(s, jnp.int32))),
        advance=lambda s, m, p: C.advance(s, m, p.env.thresholds),
        step_metrics=step_metrics, example_transition=example,
        delta_mask=np.asarray(P.MODULE_PARAMS, bool),
        init_extra=init_extra if fresh else None, begin_episode=begin_episode if fresh else None,
        episode_steps=cfg.max_steps if fresh else 0, expert=expert if teacher else None)
