"""agents/sac/trainer.py and losses.py on probe environments with known optimal Q (rejax-style) and on fixed batches."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.sac import networks as nets
from agents.sac import probe_envs as pe
from agents.sac import replay
from agents.sac import trainer as sac
from agents.sac.config import SACConfig
from agents.sac.losses import init_sac_state, make_update

ROOT = Path(__file__).resolve().parents[3]
GAMMA = 0.5
PROBE_CFG = SACConfig(n_envs=16, n_evals=2, steps_per_eval=25, updates_per_step=4, batch_size=64,
                          buffer_capacity=1024, gamma=GAMMA, tau=0.05, lr_actor=3e-3, lr_critic=3e-3,
                          hidden=(32, 32), init_alpha_c=1e-6, init_alpha_d=1e-6, shard_envs=False)
ADAPTER = pe.probe_adapter()


@pytest.fixture(scope="module")
def probe_train():
    """One compiled ``train(key, params)`` serves every probe kind (the kind is a param)."""
    return jax.jit(sac.make_train(PROBE_CFG, ADAPTER, pe.probe_params("constant")))


def _q(runner, obs, delta):
    critic = sac.make_trainer(PROBE_CFG, ADAPTER).networks[1]
    q = critic.apply(runner.sac.critic, nets.NetObs(jnp.asarray(obs)), jnp.asarray(delta))
    return np.asarray(jnp.min(q, axis=0))


@pytest.mark.parametrize("kind", ["constant", "obs_reward", "two_step", "truncated"])
def test_probe_learns_known_q(probe_train, kind):
    """Q(s, ., k) for every module k matches Q* (temperatures ~0). 'truncated' checks that the
    critic bootstraps through the time limit (Q* = 1/(1-gamma) = 2, not 1); 'two_step' checks
    discounting (gamma = 0.5). Tolerance 0.1: after 200 updates the measured error is < 0.04."""
    runner, _ = probe_train(jax.random.PRNGKey(0), pe.probe_params(kind))
    obs = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], np.float32)
    rows = {"constant": [0], "obs_reward": [0, 1], "two_step": [0, 2], "truncated": [0]}[kind]
    q = _q(runner, obs[rows], np.zeros((len(rows), pe.N_DELTA)))
    want = pe.optimal_q(kind, obs[rows], GAMMA)
    np.testing.assert_allclose(q, np.repeat(want[:, None], pe.N_MODULES, 1), atol=0.1)


def test_action_probe_learns_best_allowed_module_and_delta(probe_train):
    """Q(s, delta*, k) = MODULE_REWARD[k]; with the best module (2) locked, the greedy policy
    picks module 0 and no transition in the buffer ever used the locked module."""
    runner, metrics = probe_train(jax.random.PRNGKey(1), pe.probe_params("action", (True, True, False)))
    q = _q(runner, np.array([[1.0, 0.0]], np.float32), pe.DELTA_BEST[None])[0]
    # Module 2 was never tried; 0.15: measured errors 0.11/0.08 (the critic sees few deltas far
    # from the policy's, and the quadratic term is only learned near them).
    np.testing.assert_allclose(q[:2], pe.MODULE_REWARD[:2], atol=0.15)
    assert q[0] > q[1] + 0.3
    size = int(runner.buffer.size)
    assert size > 0 and not np.any(np.asarray(runner.buffer.data.module[:size]) == 2)
    actor = sac.make_trainer(PROBE_CFG, ADAPTER).networks[0]
    module, delta = sac.greedy_policy(actor, runner.sac.actor)(
        nets.NetObs(jnp.array([[1.0, 0.0]])), jnp.array([[True, True, False]]))
    assert int(module[0]) == 0
    np.testing.assert_allclose(np.asarray(delta[0]), pe.DELTA_BEST, atol=0.2)
    # Held-out reward of the greedy policy is near the best allowed (0.5).
    assert float(metrics["eval"]["heldout_mean_reward"][-1]) > 0.4


# Two env steps, one update after each: what vmapping over seeds promises, checked before
# chaos can set in (after 200 updates two compiled programs drift apart by up to 2.3e-3 on
# some CPUs: float32 noise amplified by every update, nothing about the seeds).
SHORT_CFG = dataclasses.replace(PROBE_CFG, n_evals=1, steps_per_eval=2, updates_per_step=1)


def _adam_step_bound(t: int, b1: float = 0.9, b2: float = 0.999) -> float:
    """Largest |m_hat / sqrt(v_hat)| of Adam's bias-corrected step t for ANY gradients:
    m_hat = sum_i w_i g_i and v_hat = sum_i u_i g_i^2 (weights summing to 1), so by
    Cauchy-Schwarz |m_hat| <= sqrt(sum_i w_i^2 / u_i) * sqrt(v_hat)."""
    i = np.arange(1, t + 1)
    w = (1 - b1) * b1 ** (t - i) / (1 - b1 ** t)
    u = (1 - b2) * b2 ** (t - i) / (1 - b2 ** t)
    return float(np.sqrt(np.sum(w * w / u)))


def test_vmap_over_seeds_equals_separate_runs():
    keys = jax.random.split(jax.random.PRNGKey(5), 2)
    params = pe.probe_params("action")
    train = sac.make_train(SHORT_CFG, ADAPTER, params)
    batched, _ = jax.jit(jax.vmap(train, in_axes=(0, None)))(keys, params)
    single_train = jax.jit(train)
    # Bound on the weights after the two updates. Both programs start from the same weights
    # (elementwise initializers: a few ulps apart at most) and see the same transitions; their
    # gradients differ by float32 reassociation in the batched GEMMs (~1e-7 relative), which
    # Adam's normalization m_hat / (sqrt(v_hat) + eps) can blow up to a different step for a
    # gradient within that noise of 0. Each Adam step moves a weight by at most lr times
    # _adam_step_bound(t) (1 and 1.0014 for t = 1, 2); max_grad_norm clipping only shrinks it.
    n_updates = SHORT_CFG.steps_per_eval * SHORT_CFG.updates_per_step
    bound = 2 * SHORT_CFG.lr_actor * sum(_adam_step_bound(t) for t in range(1, n_updates + 1))
    e = SHORT_CFG.n_envs
    for i in range(2):
        single, _ = single_train(keys[i], params)
        for a, b in zip(jax.tree.leaves(single.sac.actor), jax.tree.leaves(batched.sac.actor)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b[i]), rtol=0, atol=bound)
        # The first env step acts uniformly at random (learning_starts = 1), a function of the
        # seed's key alone: the same module choices (integers, exact) and the same deltas and
        # rewards up to a few float32 ulps (elementwise ops fused differently by the two programs).
        d_s, d_b = single.buffer.data, batched.buffer.data
        np.testing.assert_array_equal(np.asarray(d_s.module[:e]), np.asarray(d_b.module[i, :e]))
        np.testing.assert_allclose(np.asarray(d_s.delta[:e]), np.asarray(d_b.delta[i, :e]),
                                   rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(np.asarray(d_s.reward[:e]), np.asarray(d_b.reward[i, :e]),
                                   rtol=1e-6, atol=1e-6)
    # The test can fail: the two seeds' runs differ far beyond the bound (a batched run that
    # mixed up its seeds' keys would not match the separate runs).
    gap = max(float(np.max(np.abs(np.asarray(b[0]) - np.asarray(b[1]))))
              for b in jax.tree.leaves(batched.sac.actor))
    assert gap > 10 * bound, (gap, bound)


def _fixed_batch_setup(cfg):
    trainer = sac.make_trainer(cfg, ADAPTER)
    actor, critic = trainer.networks
    params = pe.probe_params("action")
    state = init_sac_state(jax.random.PRNGKey(0), cfg, actor, critic,
                               nets.NetObs(jnp.zeros(pe.OBS_DIM)), jnp.ones(pe.N_MODULES, bool))
    n = 64
    key = jax.random.PRNGKey(1)
    module = jax.random.randint(key, (n,), 0, pe.N_MODULES)
    delta = jax.random.uniform(jax.random.PRNGKey(2), (n, pe.N_DELTA), minval=-1, maxval=1)
    obs = jnp.tile(jnp.array([1.0, 0.0]), (n, 1))
    reward = jnp.asarray(pe.MODULE_REWARD)[module] - jnp.sum((delta - pe.DELTA_BEST) ** 2, -1)
    batch = replay.Transition(obs, module, delta, reward, jnp.ones(n, bool), jnp.zeros(n, bool), obs)
    return state, sac.batch_inputs(ADAPTER, batch, params), jax.jit(make_update(cfg, actor, critic))


def test_fixed_batch_losses_decrease_targets_trail_temperatures_adapt():
    cfg = PROBE_CFG.__class__(**{**PROBE_CFG.__dict__, "init_alpha_c": 0.1, "init_alpha_d": 0.1,
                                 "target_entropy_c_per_dim": -3.0, "target_entropy_d_ratio": 0.5})
    state, batch, update = _fixed_batch_setup(cfg)
    s1, m1 = update(state, batch, jax.random.PRNGKey(0))
    # Polyak: target = (1 - tau) * old target + tau * new online, exactly.
    for t_new, t_old, online in zip(jax.tree.leaves(s1.target_critic), jax.tree.leaves(state.target_critic),
                                    jax.tree.leaves(s1.critic)):
        np.testing.assert_allclose(np.asarray(t_new), (1 - cfg.tau) * np.asarray(t_old) + cfg.tau * np.asarray(online),
                                   rtol=1e-5, atol=1e-7)
    first, s, metrics = m1, s1, []
    for i in range(150):
        s, m = update(s, batch, jax.random.PRNGKey(i + 1))
        metrics.append(m)
    assert all(np.isfinite(float(m[k])) for m in metrics for k in ("critic_loss", "actor_loss"))
    assert float(metrics[-1]["critic_loss"]) < 0.2 * float(first["critic_loss"])
    assert float(metrics[-1]["actor_loss"]) < float(first["actor_loss"])
    # Targets trail the online critic: they moved, but less than the online weights did.
    d_online = sum(float(jnp.sum((a - b) ** 2)) for a, b in zip(jax.tree.leaves(s.critic), jax.tree.leaves(state.critic)))
    d_target = sum(float(jnp.sum((a - b) ** 2)) for a, b in zip(jax.tree.leaves(s.target_critic), jax.tree.leaves(state.target_critic)))
    assert 0 < d_target < d_online
    # Entropies start above both targets (H_c ~ -3.5 > -6, H_d ~ log 3 > 0.55): both alphas fall
    # on that step (later the policy sharpens below the discrete target and alpha_d rises again).
    assert float(first["entropy_c_est"]) > float(first["target_entropy_c"])
    assert float(first["entropy_d"]) > float(first["target_entropy_d"])
    assert float(s1.log_alpha_c) < float(state.log_alpha_c)
    assert float(s1.log_alpha_d) < float(state.log_alpha_d)


def test_temperatures_rise_when_entropy_below_target():
    cfg = PROBE_CFG.__class__(**{**PROBE_CFG.__dict__, "init_alpha_c": 0.1, "init_alpha_d": 0.1,
                                 "target_entropy_c_per_dim": 2.0, "target_entropy_d_ratio": 1.0})
    state, batch, update = _fixed_batch_setup(cfg)
    s = state
    for i in range(20):
        s, m = update(s, batch, jax.random.PRNGKey(i))
    assert float(m["entropy_c_est"]) < float(m["target_entropy_c"])
    assert float(s.log_alpha_c) > float(state.log_alpha_c)
    assert float(s.log_alpha_d) > float(state.log_alpha_d)


SHARD_SCRIPT = textwrap.dedent("""
    import json, jax, numpy as np
    from agents.sac import probe_envs as pe
    from agents.sac import trainer as sac
    from agents.sac.config import SACConfig
    assert jax.device_count() == 4, jax.devices()
    out = {}
    for shard in (False, True):
        cfg = SACConfig(n_envs=16, n_evals=1, steps_per_eval=6, updates_per_step=2, batch_size=32,
                        buffer_capacity=256, gamma=0.5, hidden=(16, 16), shard_envs=shard)
        params = pe.probe_params("action")
        runner, m = jax.jit(sac.make_train(cfg, pe.probe_adapter(), params))(jax.random.PRNGKey(0), params)
        out[str(shard)] = [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(runner.sac.actor)]
        if shard:
            out["n_shards"] = len(runner.obs.sharding.device_set)
    print(json.dumps(out))
""")


def test_sharded_over_4_cpu_devices_equals_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", SHARD_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["n_shards"] == 4  # the env axis really is split over the 4 devices
    for a, b in zip(out["False"], out["True"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_config_validation_messages():
    with pytest.raises(ValueError, match="encoder"):
        SACConfig(encoder="rnn")
    with pytest.raises(ValueError, match="buffer_capacity"):
        SACConfig(n_envs=64, buffer_capacity=8)
