"""Pitch-first matching (agents/search/pitch_first.py): the note comes from the target's f0,
octave candidates compete, noise falls back to plain search, the match is as loud as the target,
and the note offset folds into the tune without changing the sound. The f0 estimator is forced
to the pure-JAX YIN so that these tests need no CREPE weights."""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import curriculum as C
from agents.search.cmaes import cmaes_match
from agents.search.common import MatchConfig, free_indices, render_params
from agents.search.pitch_first import (
    PITCH_HELD,
    PitchFirstConfig,
    candidate_notes,
    fold_note,
    pitch_first,
    target_pitch,
)
from jaxsynth import params as P
from jaxsynth import pitch as PP
from jaxsynth.synth import SynthConfig

CFG = MatchConfig(synth=SynthConfig(duration_s=0.25))
SR = CFG.synth.sample_rate
FULL = C.stage_module_masks()[C.N_STAGES - 1]
YIN = PitchFirstConfig(method="yin")


def preset(**changes):
    d = P.preset_to_dict(P.DEFAULT_PARAMS01)
    d.update(changes)
    return P.preset_from_dict(d)


@pytest.fixture(scope="module")
def synth_targets():
    """Four pitched synth targets away from the default note (C4) and one noise hit."""
    xs = np.stack([
        preset(**{"osc1.coarse_st": "-7", "osc1.shape": 0.4, "filter.cutoff_hz": 1500.0}),
        preset(**{"osc1.coarse_st": "5", "osc1.fine_cents": 30.0, "output.gain_db": -14.0}),
        preset(**{"osc1.coarse_st": "14", "unison.voices": "3", "unison.detune_cents": 20.0}),
        preset(**{"osc1.coarse_st": "-18", "osc1.shape": 1.0}),
        preset(**{"osc1.level": 0.0, "noise.level": 1.0, "amp_env.decay_s": 0.05, "amp_env.sustain": 0.0}),
    ])
    audio, feats = render_params(xs, CFG)
    return xs, np.asarray(audio), feats


def test_held_parameters_leave_the_search_space():
    free = free_indices(FULL, PITCH_HELD)
    assert P.INDEX["osc1.coarse_st"] not in free and P.INDEX["osc1.fine_cents"] not in free
    assert P.INDEX["osc2.coarse_st"] in free  # the second oscillator's interval stays searchable
    assert len(free) == len(free_indices(FULL)) - 2
    assert "lfo.to_pitch_st" in PitchFirstConfig().also_held


def test_candidate_notes():
    note = PP.NoteF0(f0_hz=np.array([220.0, 220.0, np.nan]), pitched=np.array([True, True, False]),
                     ambiguous=np.array([True, False, False]), voiced_fraction=np.ones(3),
                     candidates_hz=np.array([[220.0, 110.0, 440.0], [220.0, 110.0, 440.0], [np.nan] * 3]),
                     candidate_scores=np.zeros((3, 3)))
    notes = candidate_notes(note, 60.0)
    np.testing.assert_allclose(notes[0], [57.0, 45.0, 69.0], atol=1e-4)
    np.testing.assert_allclose(notes[1], [57.0] * 3, atol=1e-4)
    np.testing.assert_allclose(notes[2], [60.0] * 3)


def test_fold_note_keeps_the_sound():
    """A preset played at note 60 + 9.3 sounds like the folded preset (tune +9 st +30 c) at 60,
    also with the filter's key tracking on (its cutoff moves with the note)."""
    xs = np.stack([preset(**{"filter.key_track": 0.7, "filter.cutoff_hz": 900.0, "osc2.level": 0.5,
                             "osc2.coarse_st": "7"}), preset()])
    notes = np.array([69.3, 40.2], np.float32)
    folded, out_notes = fold_note(xs, notes, 60.0)
    np.testing.assert_array_equal(out_notes, [60.0, 60.0])
    d = P.preset_to_dict(folded[0])
    assert d["osc1.coarse_st"] == "9" and d["osc2.coarse_st"] == "16"
    assert abs(d["osc1.fine_cents"] - 30.0) < 0.1
    a, fa = render_params(xs, CFG, notes)
    b, fb = render_params(folded, CFG)
    np.testing.assert_allclose(np.asarray(fb.log_mel), np.asarray(fa.log_mel), atol=0.5)
    # out of reach (the tune spans +-24 st): the note stays
    far, far_notes = fold_note(xs[1:], np.array([100.0], np.float32), 60.0)
    np.testing.assert_array_equal(far, xs[1:])
    np.testing.assert_array_equal(far_notes, [100.0])


def test_cmaes_pitch_first_gets_the_note_and_level(synth_targets):
    xs, audio, feats = synth_targets
    res = pitch_first(cmaes_match, YIN)(jax.random.key(0), feats, FULL, 48, CFG, target_audio=audio)
    assert int(res.trace_renders[-1]) <= 48
    match_audio, match_feats = render_params(res.best_params01, CFG, res.render_note)
    target_f0 = target_pitch(audio, SR, "yin")
    match_f0 = target_pitch(np.asarray(match_audio), SR, "yin")
    pitched = target_f0.pitched
    np.testing.assert_array_equal(pitched, [True, True, True, True, False])
    err = np.abs(PP.cents_between(match_f0.f0_hz[pitched], target_f0.f0_hz[pitched]))
    np.testing.assert_array_less(err, 50.0)
    # folded into the tune where it fits (played at the default note, first oscillator's tune
    # from the f0); elsewhere the match carries its own note (an audible second oscillator or
    # the key-tracked cutoff out of range). Which matches fold depends on where each search
    # settles (two of the four on one CPU, none on another): both outcomes are checked here,
    # the folding itself in test_fold_note_keeps_the_sound.
    notes = np.asarray(res.render_note)
    coarse = [P.preset_to_dict(np.asarray(x))["osc1.coarse_st"] for x in res.best_params01[:4]]
    expected = ["-7", "5", "14", "-18"]
    folded = notes[:4] == CFG.note
    assert [c for c, f in zip(coarse, folded) if f] == [e for e, f in zip(expected, folded) if f]
    np.testing.assert_allclose(notes[:4][~folded], (60 + np.array([-7, 5, 14, -18]))[~folded], atol=0.6)
    # level: within 1 LU of the target wherever the output gain could make it up; where the
    # match is too quiet even at full gain (a search that settled on a quieter oscillator:
    # 1 of these 4 on one CPU, 2 on another), the gain sits at the top of its range. How many
    # take each branch depends on the searches; the level step alone is tested below
    # (test_level_step_*)
    short = np.asarray(feats.loudness_lufs) - np.asarray(match_feats.loudness_lufs)
    gain = np.asarray(P.denormalize(jnp.asarray(res.best_params01)))[:, P.INDEX["output.gain_db"]]
    at_top = gain >= P.SPECS[P.INDEX["output.gain_db"]].high - 1e-3
    np.testing.assert_array_less(np.abs(short[pitched & ~at_top]), 1.0)
    assert np.all(short[pitched & at_top] > 0.0)
    np.testing.assert_allclose(np.asarray(res.best_terms.loudness_lu)[pitched], np.abs(short[pitched]), atol=0.05)


def test_unpitched_target_falls_back_to_plain_search(synth_targets):
    _, audio, feats = synth_targets
    noise = jax.tree.map(lambda x: x[4:], feats)
    res = pitch_first(cmaes_match, YIN)(jax.random.key(1), noise, FULL, 48, CFG, target_audio=audio[4:])
    assert np.asarray(res.render_note)[0] == CFG.note
    assert np.isfinite(np.asarray(res.best_loss)).all()


def test_octave_candidates_compete_and_are_charged(synth_targets):
    """Forced ambiguity: the three candidates are played (3 x compete_samples renders, charged),
    and on a synth target played with its own timbre the right octave wins."""
    xs, audio, feats = synth_targets
    pcfg = PitchFirstConfig(method="yin", compete_samples=2)
    from agents.search import pitch_first as PF

    original = PF.target_pitch

    def ambiguous_pitch(a, sr, method):
        note = original(a, sr, method)
        return note._replace(ambiguous=np.asarray(note.pitched))

    PF.target_pitch = ambiguous_pitch
    try:
        sub = jax.tree.map(lambda x: x[:2], feats)
        res = pitch_first(cmaes_match, pcfg)(jax.random.key(2), sub, FULL, 48, CFG, target_audio=audio[:2],
                                             base01=P.DEFAULT_PARAMS01)
    finally:
        PF.target_pitch = original
    assert int(res.trace_renders[0]) == 6  # the competition is the first trace point
    assert int(res.trace_renders[-1]) <= 48
    match_audio, _ = render_params(res.best_params01, CFG, res.render_note)
    err = PP.cents_between(target_pitch(np.asarray(match_audio), SR, "yin").f0_hz,
                           target_pitch(audio[:2], SR, "yin").f0_hz)
    np.testing.assert_array_less(np.abs(err), 50.0)


def test_locked_first_oscillator_means_plain_search(synth_targets):
    _, audio, feats = synth_targets
    stage0 = C.stage_module_masks()[0]
    sub = jax.tree.map(lambda x: x[:1], feats)
    res = pitch_first(cmaes_match, YIN)(jax.random.key(3), sub, stage0, 16, CFG, target_audio=audio[:1])
    assert res.render_note is None
    plain = cmaes_match(jax.random.key(3), sub, stage0, 16, CFG)
    np.testing.assert_array_equal(np.asarray(res.best_params01), np.asarray(plain.best_params01))


def test_pitched_targets_get_quiet_gradient_starts(synth_targets):
    """Pitch-first hands the matcher ``start_quiet`` = the second oscillator's and the noise's
    levels for pitched targets (nothing for the unpitched one); gradient matching's random
    starts then draw both in [0, 0.3] instead of [0, 1], everything else as before."""
    from agents.search.gradient import _grad_starts

    _, audio, feats = synth_targets
    seen = {}

    def spy(key, target, module_mask, budget, cfg, base01=P.DEFAULT_PARAMS01, notes=None):
        seen["pitched" if notes is not None else "plain"] = cfg.start_quiet
        seen["weight_pitched" if notes is not None else "weight_plain"] = cfg.pitch_weight
        return cmaes_match(key, target, module_mask, budget, cfg, base01=base01, notes=notes)

    spy.pitch_term_weight = 0.7  # the matcher's own default pitch term
    pitch_first(spy, YIN)(jax.random.key(4), feats, FULL, 24, CFG, target_audio=audio)
    assert set(seen["pitched"]) == {"osc2.level", "noise.level"}
    assert seen["plain"] == ()
    assert seen["weight_pitched"] == 0.7 and seen["weight_plain"] == 0.0
    free = free_indices(FULL, PITCH_HELD)
    base = jnp.asarray(P.DEFAULT_PARAMS01)
    quiet = tuple(sorted(P.INDEX[n] for n in seen["pitched"]))
    x = np.asarray(_grad_starts(jax.random.key(0), base, base, 4, 8, free, quiet, 0.3))
    loud = np.asarray(_grad_starts(jax.random.key(0), base, base, 4, 8, free, (), 0.3))
    col = [free.index(i) for i in quiet]
    assert np.all(x[:, 0, col] == 0.0)  # start 0 at base01 (both silent)
    assert np.all(x[:, 1:, col] <= 0.3) and np.all(x[:, 1:, col] > 0.0)  # quiet, not silent
    assert np.all(loud[:, 1:, col].max(axis=(0, 1)) > 0.6)  # uniform starts turn them up
    other = [j for j in range(len(free)) if j not in col]
    np.testing.assert_array_equal(x[:, :, other], loud[:, :, other])  # the rest as before


def test_pitch_term_weight_resolution():
    from agents.search.gradient import grad_match
    from agents.search.pitch_first import pitch_term_weight

    assert pitch_term_weight(grad_match, PitchFirstConfig(), MatchConfig()) == 1.0
    assert pitch_term_weight(cmaes_match, PitchFirstConfig(), MatchConfig()) == 0.0
    assert pitch_term_weight(grad_match, PitchFirstConfig(pitch_weight=0.0), MatchConfig()) == 0.0
    assert pitch_term_weight(cmaes_match, PitchFirstConfig(pitch_weight=0.5), MatchConfig()) == 0.5
    assert pitch_term_weight(grad_match, PitchFirstConfig(pitch_weight=0.0), MatchConfig(pitch_weight=2.0)) == 2.0
    with pytest.raises(ValueError, match="pitch_weight"):
        PitchFirstConfig(pitch_weight=-1.0)


def test_loudness_beyond_gain_is_what_the_gain_cannot_make_up():
    """From a gain of -6 dB (range -24..0) the gain reaches +6 LU up and -18 LU down for free;
    past that the shortfall counts dB for dB."""
    from agents.search.common import loudness_beyond_gain

    x = preset(**{"output.gain_db": -6.0})
    delta = jnp.asarray([0.0, 3.0, 6.0, 10.0, -18.0, -20.0, -30.0])
    got = np.asarray(loudness_beyond_gain(jnp.broadcast_to(jnp.asarray(x), (7, P.N_PARAMS)), delta))
    np.testing.assert_allclose(got, [0.0, 0.0, 0.0, 4.0, 0.0, 2.0, 12.0], atol=1e-4)  # float32 of -6 + delta


def test_search_total_ignores_loudness_the_gain_can_make_up():
    """The same preset 6 dB quieter than its target: the plain total pays 0.1 x 6 LU for the
    level; with ``loudness_after_gain`` the total is the spectral terms alone (the spectral
    features are loudness-normalised, so they barely differ), while ``loudness_lu`` still reports
    the whole difference. A candidate 30 dB too quiet at the bottom of the gain range still pays
    for the part the gain cannot reach."""
    from agents.search.common import evaluate_candidates

    target = preset(**{"osc1.coarse_st": "3", "output.gain_db": -6.0})
    quieter = preset(**{"osc1.coarse_st": "3", "output.gain_db": -12.0})
    _, tfeat = render_params(target[None], CFG)
    cands = jnp.asarray(np.stack([quieter, target]))[None]
    plain = evaluate_candidates(cands, tfeat, CFG)
    after = evaluate_candidates(cands, tfeat, replace(CFG, loudness_after_gain=True))
    lu = float(plain.loudness_lu[0, 0])
    # the reported term stays the whole difference (two compiled programs: float32 rounding of a
    # ~6 LU value, ~1e-6; the shortfall the gain cannot make up would be 0 here)
    assert 5.5 < lu < 6.5 and abs(float(after.loudness_lu[0, 0]) - lu) < 1e-4
    spectral = float(plain.total[0, 0]) - 0.1 * lu
    np.testing.assert_allclose(float(after.total[0, 0]), spectral, atol=1e-5)  # float32 sums of the same terms
    assert float(plain.total[0, 0]) > float(after.total[0, 0]) + 0.5
    # the target itself: nothing to make up either way
    np.testing.assert_allclose(float(after.total[0, 1]), float(plain.total[0, 1]), atol=1e-5)


def test_pitched_search_leaves_the_level_to_the_level_step(synth_targets):
    """Pitch-first searches pitched targets with ``loudness_after_gain`` (the level step sets the
    gain afterwards); not the unpitched ones, not without the level step, not with
    ``search_loudness``, not when the output module is locked (the gain cannot move)."""
    from agents.search.common import MatchResult
    from jaxsynth.losses import LossTerms

    _, audio, feats = synth_targets
    seen = {}

    def spy(key, target, module_mask, budget, cfg, base01=P.DEFAULT_PARAMS01, notes=None):
        """Records the config and answers ``base01`` for every target (no search to compile)."""
        seen["pitched" if notes is not None else "plain"] = cfg.loudness_after_gain
        t = target.loudness_lufs.shape[0]
        x = jnp.broadcast_to(jnp.asarray(base01), (t, P.N_PARAMS))
        zero = jnp.zeros(t)
        return MatchResult(x, zero, LossTerms(*([zero] * len(LossTerms._fields))), np.asarray([1]),
                           zero[:, None], x[:, None])

    pitch_first(spy, YIN)(jax.random.key(4), feats, FULL, 24, CFG, target_audio=audio)
    assert seen == {"pitched": True, "plain": False}
    for pcfg, mask in ((replace(YIN, level=False), FULL), (replace(YIN, search_loudness=True), FULL),
                       (YIN, FULL & (np.arange(P.N_MODULES) != P.MODULES.index("output")))):
        seen.clear()
        pitch_first(spy, pcfg)(jax.random.key(4), feats, mask, 24, CFG, target_audio=audio)
        assert seen["pitched"] is False


def test_quieter_variants_turn_down_only_the_noise_and_the_second_oscillator():
    from agents.search.pitch_first import QUIETER, quieter_variants

    x = np.stack([preset(**{"noise.level": 0.8, "osc2.level": 0.5, "osc1.level": 0.7})] * 2)
    v = quieter_variants(x, (0.5, 0.0))
    assert v.shape == (2, 3, P.N_PARAMS)
    np.testing.assert_array_equal(v[:, 0], x)
    for name in QUIETER:
        j = P.INDEX[name]
        np.testing.assert_allclose(v[:, 1, j], 0.5 * x[:, j])
        np.testing.assert_array_equal(v[:, 2, j], 0.0)
    others = [j for j in range(P.N_PARAMS) if P.NAMES[j] not in QUIETER]
    np.testing.assert_array_equal(v[:, 1:, others], np.repeat(x[:, None, others], 2, axis=1))


def test_quieter_variants_with_floor_move_level_to_the_first_oscillator():
    """With ``floor``, a copy's first-oscillator level is at least ``1 - scale`` times the louder
    of the noise and the second oscillator (before they were turned down), never lowered; the
    other parameters are as without it."""
    from agents.search.pitch_first import TONE, quieter_variants

    x = np.stack([preset(**{"noise.level": 0.8, "osc2.level": 0.5, "osc1.level": 0.0}),
                  preset(**{"noise.level": 0.2, "osc2.level": 0.6, "osc1.level": 0.9})])
    scales = (0.5, 0.0)
    v, plain = quieter_variants(x, scales, floor=True), quieter_variants(x, scales)
    tone = P.INDEX[TONE]
    louder = np.maximum(x[:, P.INDEX["noise.level"]], x[:, P.INDEX["osc2.level"]])
    for j, scale in enumerate(scales):
        np.testing.assert_allclose(v[:, 1 + j, tone], np.maximum(x[:, tone], (1.0 - scale) * louder), rtol=1e-6)
    assert v[0, 1, tone] > 0.0 and v[0, 2, tone] == pytest.approx(x[0, P.INDEX["noise.level"]])
    assert v[1, 1, tone] == x[1, tone]  # already louder: left alone
    rest = [j for j in range(P.N_PARAMS) if j != tone]
    np.testing.assert_array_equal(v[..., rest], plain[..., rest])
    np.testing.assert_array_equal(v[:, 0], x)


def test_level_step_prefers_an_in_tune_variant_only_within_the_slack():
    """A pitched target (a saw at A3) and a match that is the same saw drowned in noise (read
    unpitched): the level step's variant without the noise reads at the target's f0 and sounds
    like the target, so it replaces the match; without ``pitched_scales`` the match stays. A
    noisy target whose match is close to it keeps the match: its in-tune variant (the bare saw)
    is far more than the slack worse. An unpitched target (f0 NaN) is never touched."""
    from agents.search.pitch_first import match_level

    saw = preset(**{"osc1.coarse_st": "-3", "osc1.shape": 1.0, "output.gain_db": -10.0})
    drowned = preset(**{"osc1.coarse_st": "-3", "osc1.shape": 1.0, "osc1.level": 0.25, "noise.level": 1.0,
                        "output.gain_db": -10.0})
    near = preset(**{"osc1.coarse_st": "-3", "osc1.shape": 1.0, "osc1.level": 0.3, "noise.level": 1.0,
                     "output.gain_db": -10.0})  # close to the noisy target, not equal (loss > 0)
    _, tfeat = render_params(np.stack([saw, drowned, saw]), CFG)
    audio, _ = render_params(np.stack([drowned, near]), CFG)
    assert not np.asarray(target_pitch(np.asarray(audio), SR, "yin").pitched).any()  # both read unpitched
    f0 = PP.midi_to_hz(57.0)
    target_f0 = np.asarray([f0, f0, np.nan])
    matches = np.stack([drowned, near, drowned])
    notes = np.full(3, CFG.note, np.float32)
    x, _, terms = match_level(tfeat, matches, notes, FULL, CFG, target_f0, "yin", pitched_scales=(0.0,),
                              pitched_slack=0.2)
    noise = P.INDEX["noise.level"]
    assert x[0, noise] == 0.0 and x[1, noise] == near[noise] and x[2, noise] == drowned[noise]
    out, _ = render_params(x[:1], CFG)
    got = target_pitch(np.asarray(out), SR, "yin")
    assert abs(float(PP.cents_between(got.f0_hz[0], f0))) < 50.0
    x0, _, _ = match_level(tfeat, matches, notes, FULL, CFG, target_f0, "yin")
    np.testing.assert_array_equal(x0[:, noise], matches[:, noise])
    # the slack is what keeps the noisy target's match: with any loss allowed, it is replaced too
    for slack in (1e6, None):  # None: no limit, what PitchFirstConfig uses by default
        x_any, _, _ = match_level(tfeat, matches, notes, FULL, CFG, target_f0, "yin", pitched_scales=(0.0,),
                                  pitched_slack=slack)
        assert x_any[1, noise] == 0.0 and x_any[2, noise] == drowned[noise]


def test_level_step_floor_gives_a_pure_noise_match_a_tone():
    """A pitched target (a saw at A3) matched by pure noise (first oscillator at 0, read
    unpitched): turning the noise down leaves silence, so only the copy that also moves level
    to the first oscillator (``pitched_floor``) reads a pitch, and it reads the target's."""
    from agents.search.pitch_first import match_level

    saw = preset(**{"osc1.coarse_st": "-3", "osc1.shape": 1.0, "output.gain_db": -10.0})
    noise_only = preset(**{"osc1.coarse_st": "-3", "osc1.shape": 1.0, "osc1.level": 0.0, "noise.level": 1.0,
                           "output.gain_db": -10.0})
    _, tfeat = render_params(saw[None], CFG)
    f0 = np.asarray([PP.midi_to_hz(57.0)])
    notes = np.full(1, CFG.note, np.float32)
    x0, n0, _ = match_level(tfeat, noise_only[None], notes, FULL, CFG, f0, "yin", pitched_scales=(0.4, 0.0))
    assert x0[0, P.INDEX["osc1.level"]] == 0.0 and n0[0] == CFG.note  # no copy reads a pitch: kept
    x, n, _ = match_level(tfeat, noise_only[None], notes, FULL, CFG, f0, "yin", pitched_scales=(0.4, 0.0),
                          pitched_floor=True)
    assert x[0, P.INDEX["osc1.level"]] > 0.5 and x[0, P.INDEX["noise.level"]] < noise_only[P.INDEX["noise.level"]]
    out, _ = render_params(x, CFG, n)
    got = target_pitch(np.asarray(out), SR, "yin")
    assert abs(float(PP.cents_between(got.f0_hz[0], f0[0]))) < 50.0


def test_level_step_transposes_the_copy_that_reads_a_pitch():
    """A match read unpitched (a saw an octave above the target's A3, drowned in noise) whose
    quieter copy reads a pitch an octave off: no copy is in tune, so the copy that reads a pitch
    is taken and its render note moves by the octave; the result reads the target's f0. Before,
    only the match itself could be transposed, and an unpitched match was kept as it was."""
    from agents.search.pitch_first import match_level

    saw = preset(**{"osc1.coarse_st": "-3", "osc1.shape": 1.0, "output.gain_db": -10.0})
    drowned_up = preset(**{"osc1.coarse_st": "9", "osc1.shape": 1.0, "osc1.level": 0.25, "noise.level": 1.0,
                           "output.gain_db": -10.0})
    _, tfeat = render_params(saw[None], CFG)
    audio, _ = render_params(drowned_up[None], CFG)
    assert not bool(np.asarray(target_pitch(np.asarray(audio), SR, "yin").pitched)[0])
    f0 = np.asarray([PP.midi_to_hz(57.0)])
    notes = np.full(1, CFG.note, np.float32)
    x, n, _ = match_level(tfeat, drowned_up[None], notes, FULL, CFG, f0, "yin", pitched_scales=(0.0,))
    assert x[0, P.INDEX["noise.level"]] == 0.0
    assert n[0] == pytest.approx(CFG.note - 12.0, abs=0.5)
    out, _ = render_params(x, CFG, n)
    got = target_pitch(np.asarray(out), SR, "yin")
    assert abs(float(PP.cents_between(got.f0_hz[0], f0[0]))) < 50.0
    # without copies nothing reads a pitch: the unpitched match is kept at its note
    x_s, n_s, _ = match_level(tfeat, drowned_up[None], notes, FULL, CFG, f0, "yin")
    np.testing.assert_array_equal(x_s[0, P.INDEX["noise.level"]], drowned_up[P.INDEX["noise.level"]])
    assert n_s[0] == CFG.note


def test_copies_at_target_note_only_where_the_search_played_another_octave():
    """Target 0's match plays an octave below its f0's note (the competition picked f0/2) and
    target 1's two octaves above: their copies play at the f0's octave and the first copy is
    the match itself, then the first quieter copy. Target 2 (render note = f0's note), target 3
    (unpitched) and target 4 (3 semitones from the f0's note: a preset's own tune offset, as
    with a coarse tune of -3 at note 60) keep everything."""
    from agents.search.pitch_first import copies_at_target_note, quieter_variants

    x = np.stack([preset(**{"noise.level": 0.8, "osc2.level": 0.5})] * 5)
    v = quieter_variants(x, (0.4, 0.2), floor=True)
    f0 = np.asarray([PP.midi_to_hz(57.0), PP.midi_to_hz(50.5), PP.midi_to_hz(62.3), np.nan, PP.midi_to_hz(57.0)])
    notes = np.asarray([45.0, 74.5, 62.3, 60.0, 60.0], np.float32)
    got, got_notes = copies_at_target_note(v, notes, f0)
    assert got.shape == v.shape and got_notes.shape == v.shape[:2]
    for i in (0, 1):
        np.testing.assert_array_equal(got[i, :2], np.stack([x[i], x[i]]))
        np.testing.assert_array_equal(got[i, 2], v[i, 1])
    np.testing.assert_array_equal(got_notes[:2], [[45.0, 57.0, 57.0], [74.5, 50.5, 50.5]])
    np.testing.assert_array_equal(got[2:], v[2:])
    np.testing.assert_array_equal(got_notes[2:], np.repeat(notes[2:, None], 3, axis=1))


def test_level_step_hears_the_match_at_the_f0_note_before_moving_it():
    """A match played an octave below its target's A3 (note 45; a plain saw, so it reads an
    octave low; no noise or second oscillator, so every copy is the match): the level step's
    first copy plays it at the f0's note, reads in tune and is taken as heard, so the note is the f0's note itself (a move by the measured difference would
    land a few cents from it) and the preset is the match's."""
    from agents.search.pitch_first import match_level

    saw = preset(**{"osc1.coarse_st": "-3", "osc1.shape": 1.0, "output.gain_db": -10.0})
    match = preset(**{"osc1.shape": 1.0, "noise.level": 0.0, "osc2.level": 0.0, "output.gain_db": -10.0})
    _, tfeat = render_params(saw[None], CFG)
    f0 = np.asarray([PP.midi_to_hz(57.0)])
    x, n, _ = match_level(tfeat, match[None], np.asarray([45.0], np.float32), FULL, CFG, f0, "yin",
                          pitched_scales=(0.4, 0.2), pitched_floor=True)
    assert float(n[0]) == pytest.approx(57.0, abs=1e-4)
    gain = P.INDEX["output.gain_db"]
    rest = [j for j in range(P.N_PARAMS) if j != gain]
    np.testing.assert_array_equal(x[0, rest], match[rest])
