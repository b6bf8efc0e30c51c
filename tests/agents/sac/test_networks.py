"""agents/networks.py: masked categorical head, tanh-Gaussian log-density, encoders, critics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from agents.sac import networks as nets
from agents.sac import trainer as sac


def test_masked_head_never_selects_locked_module():
    """Policy sampling, uniform exploration and greedy argmax never pick a locked module,
    even when the locked modules have the largest raw logits."""
    k = 9
    mask = jnp.array([False, True, False, True, True, False, False, True, False])
    actor = nets.Actor(k, 4, "mlp", (16,))
    obs = nets.NetObs(jax.random.normal(jax.random.PRNGKey(0), (512, 6)))
    masks = jnp.broadcast_to(mask, (512, k))
    params = actor.init(jax.random.PRNGKey(1), obs, masks)
    # Make locked modules maximally attractive through the output bias.
    bias = params["params"]["Dense_0"]["bias"]
    params["params"]["Dense_0"]["bias"] = bias + jnp.where(mask, 0.0, 50.0)
    for uniform in (False, True):
        for seed in range(4):
            module, delta = sac.sample_actions(actor, params, jax.random.PRNGKey(seed), obs, masks,
                                               jnp.asarray(uniform))
            assert bool(jnp.all(mask[module])), f"locked module chosen (uniform={uniform})"
            assert float(jnp.max(jnp.abs(delta))) <= 1.0
    greedy, _ = sac.greedy_policy(actor, params)(obs, masks)
    assert bool(jnp.all(mask[greedy]))
    logits, _, _ = actor.apply(params, obs, masks)
    probs, logp = nets.categorical_probs_logprobs(logits)
    assert float(jnp.max(jnp.where(mask, 0.0, probs))) == 0.0  # exactly zero probability
    assert bool(jnp.all(jnp.isfinite(logp)))
    np.testing.assert_allclose(np.asarray(probs.sum(-1)), 1.0, rtol=1e-5)


def test_masked_entropy_of_uniform_logits_is_log_allowed():
    mask = jnp.array([[True, True, False, False], [True, True, True, True], [True, False, False, False]])
    probs, logp = nets.categorical_probs_logprobs(nets.masked_logits(jnp.zeros((3, 4)), mask))
    entropy = -jnp.sum(probs * logp, axis=-1)
    np.testing.assert_allclose(np.asarray(entropy), np.log([2, 4, 1]), atol=1e-6)


def test_all_locked_mask_falls_back_to_all_allowed():
    probs, _ = nets.categorical_probs_logprobs(nets.masked_logits(jnp.zeros((1, 3)), jnp.zeros((1, 3), bool)))
    np.testing.assert_allclose(np.asarray(probs), 1 / 3, rtol=1e-6)


def test_tanh_gaussian_log_density_matches_change_of_variables():
    """log p(tanh u) = sum log N(u; mean, std) - log(1 - tanh(u)^2), reference in float64 scipy."""
    key = jax.random.PRNGKey(3)
    mean = jax.random.normal(key, (64, 5)) * 1.5
    log_std = jnp.linspace(-3.0, 1.0, 5)[None].repeat(64, 0)
    a, logp = nets.tanh_gaussian_sample(jax.random.PRNGKey(4), mean, log_std)
    a64 = np.asarray(a, np.float64)
    eps = jax.random.normal(jax.random.PRNGKey(4), mean.shape)
    u = np.asarray(mean + jnp.exp(log_std) * eps, np.float64)
    ref = np.sum(stats.norm.logpdf(u, np.asarray(mean, np.float64), np.exp(np.asarray(log_std, np.float64)))
                 - np.log1p(-np.tanh(u) ** 2), axis=-1)
    np.testing.assert_allclose(np.asarray(logp), ref, rtol=1e-4, atol=2e-3)
    assert np.all(np.abs(a64) <= 1.0)


@pytest.mark.parametrize("encoder", ["mlp", "cnn"])
def test_actor_and_twin_critic_shapes(encoder):
    obs = nets.NetObs(jnp.ones((7, 42)), jnp.ones((7, 13, 32, 3)))
    mask = jnp.ones((7, 9), bool)
    actor = nets.Actor(9, 33, encoder, (32, 32))
    ap = actor.init(jax.random.PRNGKey(0), obs, mask)
    logits, mean, log_std = actor.apply(ap, obs, mask)
    assert logits.shape == (7, 9) and mean.shape == (7, 33) and log_std.shape == (7, 33)
    assert float(log_std.min()) >= nets.LOG_STD_MIN and float(log_std.max()) <= nets.LOG_STD_MAX
    critic = nets.TwinCritic(9, encoder, (32, 32))
    cp = critic.init(jax.random.PRNGKey(1), obs, mean)
    q = critic.apply(cp, obs, mean)
    assert q.shape == (2, 7, 9)
    # The two critics are independently initialised (clipped double Q needs two opinions).
    assert float(jnp.max(jnp.abs(q[0] - q[1]))) > 1e-4


def test_cnn_encoder_requires_image():
    with pytest.raises(ValueError, match="MLP encoder"):
        nets.Actor(3, 2, "cnn", (8,)).init(jax.random.PRNGKey(0), nets.NetObs(jnp.ones((1, 4))),
                                           jnp.ones((1, 3), bool))
