"""Matchers (agents/matchers.py): gradient matching lowers the loss where gradients are
informative, discrete parameters are held, random search keeps the budget and locked modules,
bad arguments give clear errors. Shapes are shared with test_cmaes.py (one compile)."""

import jax
import numpy as np
import pytest

from agents import curriculum as C
from agents.search.common import MatchConfig, free_indices, target_features_of_params
from agents.search.gradient import grad_match
from agents.search.random_search import random_search
from jaxsynth import params as P
from jaxsynth.synth import SynthConfig

CFG = MatchConfig(synth=SynthConfig(duration_s=0.25))
STAGE0 = C.stage_module_masks()[0]
HELDOUT = C.heldout_presets(0, 0, 8)


def test_grad_match_lowers_loss_on_informative_target():
    # Target: the default preset with a darker filter and a lower sustain, both parameters
    # with smooth, monotone effects on the spectrum and the level contour.
    x = np.asarray(P.DEFAULT_PARAMS01, np.float32).copy()
    x[P.INDEX["filter.cutoff_hz"]] = 0.45
    x[P.INDEX["amp_env.sustain"]] = 0.4
    tf = target_features_of_params(x[None], CFG)
    res = grad_match(jax.random.key(0), tf, STAGE0, 12 * CFG.grad_step_renders, CFG, starts=1,
                     learning_rate=0.05)
    tl = np.asarray(res.trace_loss)[0]
    assert tl.shape == (12,)
    # trace point 0 is the start (the defaults); Adam must at least halve the loss
    assert tl[-1] < 0.5 * tl[0], tl
    bp = np.asarray(res.best_params01)[0]
    assert abs(bp[P.INDEX["filter.cutoff_hz"]] - 0.45) < abs(P.DEFAULT_PARAMS01[P.INDEX["filter.cutoff_hz"]] - 0.45)
    # discrete parameters are held at the start's (snapped) value
    assert bp[P.INDEX["filter.type"]] == P.DEFAULT_PARAMS01[P.INDEX["filter.type"]]
    # budget: 12 steps x grad_step_renders renders
    assert int(res.trace_renders[-1]) == 12 * CFG.grad_step_renders


def test_random_search_budget_locked_modules_and_determinism():
    tf = target_features_of_params(HELDOUT, CFG)
    a = random_search(jax.random.key(5), tf, STAGE0, 30, CFG)
    b = random_search(jax.random.key(5), tf, STAGE0, 30, CFG)
    np.testing.assert_array_equal(np.asarray(a.best_params01), np.asarray(b.best_params01))
    assert int(a.trace_renders[-1]) <= 30 and a.trace_renders[0] == 10  # population 10
    bp = np.asarray(a.best_params01)
    locked = ~np.asarray(P.param_mask(STAGE0))
    assert np.all(bp[:, locked] == P.DEFAULT_PARAMS01[locked])
    assert np.all(np.diff(np.asarray(a.trace_loss), axis=1) <= 0)
    # the reported loss is the loss of the reported preset (re-evaluated independently)
    from agents.search.common import evaluate_candidates
    again = evaluate_candidates(a.best_params01[:, None], tf, CFG).total[:, 0]
    np.testing.assert_allclose(np.asarray(again), np.asarray(a.best_loss), rtol=1e-5, atol=1e-6)


def test_clear_errors():
    tf = target_features_of_params(HELDOUT, CFG)
    with pytest.raises(ValueError, match="module_mask must have shape"):
        free_indices(np.ones(3, bool))
    with pytest.raises(ValueError, match="unlocks no module"):
        free_indices(np.zeros(P.N_MODULES, bool))
    with pytest.raises(ValueError, match="budget of 2 renders"):
        grad_match(jax.random.key(0), tf, STAGE0, 2, CFG)
    with pytest.raises(ValueError, match="base01 must have shape"):
        random_search(jax.random.key(0), tf, STAGE0, 20, CFG, base01=np.zeros(3))
    with pytest.raises(ValueError, match="features_override"):
        from jaxsynth.features import FeatureConfig
        MatchConfig(features_override=FeatureConfig(sample_rate=16000))


def test_start_quiet_is_checked():
    with pytest.raises(ValueError, match="unknown parameter"):
        MatchConfig(start_quiet=("osc9.level",))
    with pytest.raises(ValueError, match="start_quiet_max"):
        MatchConfig(start_quiet_max=1.5)


def test_pitch_weight_adds_the_aperiodicity_where_notes_are_given():
    from agents.search.common import evaluate_candidates, render_params
    from jaxsynth import pitch as PP

    x = np.asarray(HELDOUT[:2], np.float32)
    tf = target_features_of_params(x, CFG)
    on = MatchConfig(synth=CFG.synth, pitch_weight=2.0)
    notes = np.array([60.0, 67.0], np.float32)
    plain = np.asarray(evaluate_candidates(x[:, None], tf, CFG, notes).total)[:, 0]
    with_term = np.asarray(evaluate_candidates(x[:, None], tf, on, notes).total)[:, 0]
    audio, _ = render_params(x, CFG, notes)
    expected = np.asarray(PP.aperiodicity_at(audio, PP.midi_to_hz(notes), PP.PitchConfig()))
    # the same render twice, one program with and one without the extra term: float32 sums of
    # a few terms of size ~1 agree to ~1e-6 relative
    np.testing.assert_allclose(with_term - plain, 2.0 * expected, rtol=1e-4, atol=1e-5)
    # no notes (plain search, the target's f0 unknown): no term
    np.testing.assert_allclose(np.asarray(evaluate_candidates(x[:, None], tf, on).total),
                               np.asarray(evaluate_candidates(x[:, None], tf, CFG).total), rtol=1e-6)
    with pytest.raises(ValueError, match="pitch_weight"):
        MatchConfig(pitch_weight=-1.0)
