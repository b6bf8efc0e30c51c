"""Tests for jaxsynth/perceptual.py and the optional CREPE terms in losses.py / reward.py.

References are analytic: a tone detuned by d cents has a pitch error of d cents; the
Wasserstein-1 distance between two posteriors of the same shape shifted by d cents is d; a
term with weight 0 must leave every other term bit-for-bit unchanged.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsynth import crepe as C
from jaxsynth import features as F
from jaxsynth import losses as L
from jaxsynth import perceptual as P
from jaxsynth import reward as R

SR, N = 22050, 11025
T = np.arange(N) / SR
CFG = P.PerceptualConfig()


def tone(f0_hz, amp=0.3):
    x = sum(np.sin(2 * np.pi * k * f0_hz * T) / k for k in range(1, 12) if k * f0_hz < SR / 2)
    return (amp * x * np.exp(-1.5 * T)).astype(np.float32)


def cents(c, base=220.0):
    return base * 2 ** (c / 1200)


@pytest.fixture(scope="module")
def weights():
    return C.load_weights("tiny")


@pytest.fixture(scope="module")
def clips():
    # target, +50 cents, +1 semitone, +1 octave, -80 cents (one batch: one compile)
    return np.stack([tone(220.0), tone(cents(50)), tone(cents(100)), tone(440.0), tone(cents(-80))])


@pytest.fixture(scope="module")
def feats(clips, weights):
    return P.analyze_jit(jnp.asarray(clips), weights, CFG)


def _pick(feats, i):
    return jax.tree.map(lambda x: x[i], feats)


def test_w1_of_shifted_posterior_is_the_shift():
    bins = np.arange(360)
    a = np.exp(-0.5 * ((bins - 150.3) / 1.25) ** 2)
    b = np.exp(-0.5 * ((bins - 155.3) / 1.25) ** 2)  # 5 bins = 100 cents higher
    assert float(P.posterior_w1_cents(jnp.asarray(b), jnp.asarray(a))) == pytest.approx(100.0, abs=0.5)
    assert float(P.posterior_w1_cents(jnp.asarray(a), jnp.asarray(a))) == 0.0


def test_pitch_distances_grow_with_detune(feats):
    target = _pick(feats, 0)
    w1 = [float(P.pitch_posterior_distance(_pick(feats, i), target, CFG)) for i in range(5)]
    emb = [float(P.embedding_distance(_pick(feats, i), target, CFG)) for i in range(5)]
    assert w1[0] == 0.0 and emb[0] < 1e-6  # sqrt(1e-12) floor in the norm
    assert w1[1] == pytest.approx(50, abs=15) and w1[2] == pytest.approx(100, abs=20)
    assert w1[3] == pytest.approx(1200, abs=150) and w1[4] == pytest.approx(80, abs=20)
    assert 0 < emb[1] < emb[2]  # embedding distance is pitch-sensitive too


def test_pitch_error_metric(clips):
    err = P.pitch_error_cents(clips, clips[0], SR, model="tiny", hop_16k=400)
    assert err.shape == (5,)
    np.testing.assert_allclose(err, [0, 50, 100, 1200, 80], atol=10)
    silent = P.pitch_error_cents(clips[0], np.zeros(N, np.float32), SR, hop_16k=400)
    assert np.isnan(silent)  # no voiced target frame: pitch undefined
    with pytest.raises(ValueError, match="NaN"):
        P.pitch_error_cents(np.full(N, np.nan, np.float32), clips[0], SR)
    with pytest.raises(ValueError, match="samples"):
        P.pitch_error_cents(clips[0][:-1], clips[0], SR)


def test_pitch_posterior_gradient_is_finite_and_informative(weights):
    # Gradient w.r.t. the mix of the target tone and a tone 150 cents sharp: more target must
    # mean less distance. (Gradients w.r.t. an oscillator's frequency through the waveform are
    # oscillatory and not a fair probe, see Turian & Henry 2020, "I'm Sorry for Your Loss".)
    target = P.analyze(jnp.asarray(tone(220.0)), weights, CFG)
    a, b = jnp.asarray(tone(220.0)), jnp.asarray(tone(cents(150)))

    def dist(mix):
        return P.pitch_posterior_distance(P.analyze(mix * a + (1 - mix) * b, weights, CFG), target, CFG)

    g = jax.jit(jax.grad(dist))(jnp.float32(0.3))
    assert np.isfinite(float(g)) and float(g) < 0


def test_perceptual_terms_off_change_nothing_and_on_change_only_themselves(clips, feats):
    fcfg = F.FeatureConfig()
    pred_f, target_f = F.analyze(jnp.asarray(clips[1]), fcfg), F.analyze(jnp.asarray(clips[0]), fcfg)
    pred_p, target_p = _pick(feats, 1), _pick(feats, 0)
    off = L.matching_loss(pred_f, target_f)
    off_with_feats = L.matching_loss(pred_f, target_f, L.LossWeights(), pred_p, target_p)
    on = L.matching_loss(pred_f, target_f, dataclasses.replace(L.LossWeights(), crepe_embedding=0.5,
                                                               pitch_posterior_cents=0.01), pred_p, target_p)
    assert type(off) is L.LossTerms and type(on) is L.LossTerms  # one type, CREPE fields always present
    assert float(off.crepe_embedding) == 0.0 and float(off.pitch_posterior_cents) == 0.0  # off: not computed
    for name in L.LossTerms._fields:
        if name not in ("total", "crepe_embedding", "pitch_posterior_cents"):
            assert np.asarray(getattr(on, name)).tobytes() == np.asarray(getattr(off, name)).tobytes(), name
    only_pitch = L.matching_loss(pred_f, target_f, L.LossWeights(pitch_posterior_cents=0.01), pred_p, target_p)
    assert float(only_pitch.crepe_embedding) == 0.0  # weight 0: not computed
    assert np.asarray(off.total).tobytes() == np.asarray(off_with_feats.total).tobytes()
    assert float(on.pitch_posterior_cents) > 20 and float(on.crepe_embedding) > 0
    expected = float(off.total) + 0.5 * float(on.crepe_embedding) + 0.01 * float(on.pitch_posterior_cents)
    assert float(on.total) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="pred_perceptual"):
        L.matching_loss(pred_f, target_f, L.LossWeights(pitch_posterior_cents=1.0))


def test_reward_perceptual_term_off_changes_nothing():
    stats = R.AudioStats(jnp.float32(-20.0), jnp.float32(0.0), jnp.float32(0.0))
    args = (jnp.float32(3.0), jnp.float32(3.5), jnp.float32(3.2), stats, stats, jnp.ones(4) * 0.1, 0.05)
    off = R.reward(*args)
    on = R.reward(*args, cfg=R.RewardConfig(perceptual_scale=0.01), perceptual_now=jnp.float32(40.0),
                  perceptual_prev=jnp.float32(90.0))
    for name in R.RewardTerms._fields:
        if name not in ("total", "perceptual"):
            assert float(getattr(on, name)) == float(getattr(off, name)), name
    assert float(off.perceptual) == 0.0
    assert float(on.perceptual) == pytest.approx(0.5)
    assert float(on.total) == pytest.approx(float(off.total) + 0.5, abs=1e-6)
    with pytest.raises(ValueError, match="perceptual_now"):
        R.reward(*args, cfg=R.RewardConfig(perceptual_scale=0.01))


def test_config_validation():
    with pytest.raises(ValueError, match="embedding_layer"):
        P.PerceptualConfig(embedding_layer=0)
    with pytest.raises(ValueError, match="voicing_threshold"):
        P.PerceptualConfig(voicing_threshold=1.5)


def test_loss_terms_always_carry_the_crepe_fields():
    """One LossTerms: the CREPE fields sit before the total whatever the weights."""
    assert L.LossTerms._fields[-3:] == ("crepe_embedding", "pitch_posterior_cents", "total")
