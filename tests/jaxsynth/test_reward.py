"""Tests for jaxsynth/reward.py: terms add up, telescoping, and cheats lose to honest matches.

The cheat tests run the real pipeline (features.analyze -> losses.matching_loss -> reward)
on synthetic signals; the reference for "honest" is a harmonic tone 10 cents off the target.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsynth import features as F
from jaxsynth import losses as L
from jaxsynth import reward as R

CFG = F.FeatureConfig()
SR, N = CFG.sample_rate, CFG.num_samples
T = np.arange(N) / SR
ANALYZE = jax.jit(F.analyze, static_argnums=1)


def harmonic(f0_hz, amp=0.3):
    x = amp * sum(np.sin(2 * np.pi * k * f0_hz * T) / k for k in range(1, 9)) * np.exp(-2 * T)
    return x.astype(np.float32)


TARGET = harmonic(220.0)
RNG = np.random.default_rng(0)
CANDIDATES = {
    "honest": harmonic(220.0 * 2 ** (10 / 1200)),
    "silent": np.zeros(N, np.float32),
    "clipped": np.clip(8 * TARGET, -1, 1),
    "dc": TARGET + 0.3,
    "quiet_copy": 0.1 * TARGET,  # perfect spectrum, level gamed down 20 dB
    "near_silent_copy": 1e-3 * TARGET,  # below the normalisation gain limit
    "loudness_matched_noise": (0.05 * RNG.standard_normal(N)).astype(np.float32),
    "full_scale_noise": RNG.uniform(-1, 1, N).astype(np.float32),
}


def step(candidate, target=TARGET, prev=None, action_delta=None, action_lambda=0.0):
    target_f = ANALYZE(jnp.asarray(target), CFG)
    if prev is None:  # the episode started from a clearly wrong sound
        prev = L.matching_loss(ANALYZE(jnp.asarray(harmonic(330.0)), CFG), target_f).total
    current_f = ANALYZE(jnp.asarray(candidate), CFG)
    loss = L.matching_loss(current_f, target_f)
    delta = jnp.zeros(4) if action_delta is None else action_delta
    terms = R.reward(loss.total, prev, prev, R.AudioStats.from_features(current_f),
                     R.AudioStats.from_features(target_f), delta, action_lambda)
    return loss, terms


@pytest.fixture(scope="module")
def outcomes():
    return {name: step(x) for name, x in CANDIDATES.items()}


def test_terms_sum_to_total_batched():
    rng = np.random.default_rng(1)
    b = 16
    stats = lambda: R.AudioStats(jnp.asarray(rng.uniform(-110, 0, b), jnp.float32),
                                 jnp.asarray(rng.uniform(-0.3, 0.3, b), jnp.float32),
                                 jnp.asarray(rng.uniform(0, 0.05, b), jnp.float32))
    terms = jax.jit(R.reward)(jnp.asarray(rng.uniform(0, 10, b)), jnp.asarray(rng.uniform(0, 10, b)),
                              jnp.asarray(rng.uniform(0, 10, b)), stats(), stats(),
                              jnp.asarray(rng.normal(size=(b, 5))), jnp.asarray(rng.uniform(0, 1, b)))
    parts = sum(v for k, v in terms._asdict().items() if k != "total")
    np.testing.assert_allclose(terms.total, parts, rtol=1e-6, atol=1e-6)
    for k, v in terms._asdict().items():
        assert v.shape == (b,), k
    assert np.all(np.asarray(terms.silence) <= 0) and np.all(np.asarray(terms.action) <= 0)


def test_improvement_and_bonus_telescope():
    losses = [5.0, 4.0, 4.5, 3.0, 3.5, 3.2, 2.0]
    best = losses[0]
    improvements, bonuses = [], []
    for prev, now in zip(losses, losses[1:]):
        t = R.reward(jnp.float32(now), jnp.float32(prev), jnp.float32(best),
                     R.AudioStats(-20.0, 0.0, 0.0), R.AudioStats(-20.0, 0.0, 0.0), jnp.zeros(3), 0.0)
        improvements.append(float(t.improvement))
        bonuses.append(float(t.best_bonus))
        best = min(best, now)
    assert sum(improvements) == pytest.approx(losses[0] - losses[-1], abs=1e-5)
    cfg = R.RewardConfig()
    assert sum(bonuses) == pytest.approx(cfg.best_bonus_scale * (losses[0] - min(losses)), abs=1e-5)
    assert bonuses[1] == 0.0 and bonuses[3] == 0.0 and bonuses[4] == 0.0  # not a new best


def test_action_penalty_uses_passed_lambda():
    delta = jnp.asarray([[0.1, -0.2, 0.0], [0.5, 0.5, 0.5]])
    lam = jnp.asarray([2.0, 0.1])
    t = R.reward(jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), R.AudioStats(-20.0, 0.0, 0.0),
                 R.AudioStats(-20.0, 0.0, 0.0), delta, lam)
    np.testing.assert_allclose(t.action, [-2.0 * 0.05, -0.1 * 0.75], rtol=1e-6)


@pytest.mark.parametrize("cheat", [c for c in CANDIDATES if c != "honest"])
def test_cheats_score_worse_than_honest_near_match(outcomes, cheat):
    _, honest = outcomes["honest"]
    loss, terms = outcomes[cheat]
    assert float(terms.total) < float(honest.total)
    for v in list(loss) + list(terms):
        assert np.isfinite(float(v))


def test_honest_match_has_no_penalties(outcomes):
    _, t = outcomes["honest"]
    assert float(t.silence) == float(t.clipping) == float(t.dc_offset) == 0.0
    assert float(t.improvement) > 0 and float(t.best_bonus) > 0


@pytest.mark.parametrize("cheat,term", [("silent", "silence"), ("near_silent_copy", "silence"),
                                        ("clipped", "clipping"), ("full_scale_noise", "clipping"),
                                        ("dc", "dc_offset")])
def test_each_cheat_triggers_its_penalty(outcomes, cheat, term):
    _, t = outcomes[cheat]
    assert float(getattr(t, term)) < -0.5


def test_silence_beats_wrong_sounds_on_mrstft_which_is_why_it_is_penalised(outcomes):
    silent_loss, silent = outcomes["silent"]
    noise_loss, noise = outcomes["loudness_matched_noise"]
    assert float(silent_loss.mrstft) < float(noise_loss.mrstft)
    assert float(silent.silence) == -R.RewardConfig().silence_weight
    assert float(noise.silence) == 0.0


def test_level_gaming_cannot_buy_spectral_loss(outcomes):
    quiet_loss, _ = outcomes["quiet_copy"]
    assert float(quiet_loss.mrstft) < 1e-3 and float(quiet_loss.mfcc_l1) < 0.05
    assert float(quiet_loss.loudness_lu) == pytest.approx(20.0, abs=0.05)


def test_penalties_are_relative_to_the_target():
    clipped_target = np.clip(8 * TARGET, -1, 1)
    _, t = step(clipped_target, target=clipped_target)
    assert float(t.clipping) == 0.0
    dc_target = TARGET + 0.3
    _, t = step(dc_target, target=dc_target)
    assert float(t.dc_offset) == 0.0
    silent = np.zeros(N, np.float32)
    _, t = step(silent, target=silent, prev=jnp.float32(1.0))
    assert float(t.silence) == 0.0
    assert np.isfinite(float(t.total))


def test_non_finite_loss_gives_no_improvement():
    t = R.reward(jnp.float32(jnp.nan), jnp.float32(1.0), jnp.float32(1.0), R.AudioStats(-20.0, 0.0, 0.0),
                 R.AudioStats(-20.0, 0.0, 0.0), jnp.zeros(2), 0.1)
    assert float(t.improvement) == 0.0 and float(t.best_bonus) == 0.0 and np.isfinite(float(t.total))


def test_config_validation():
    with pytest.raises(ValueError, match="dc_full"):
        R.RewardConfig(dc_full=0.0)
