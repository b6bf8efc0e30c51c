"""The learned matchers' CMA-ES refinement keeps the first stage's pitch
(agents/evaluation/registry.unfold_tune and then_cmaes(hold_pitch=True))."""

import jax
import jax.numpy as jnp
import numpy as np

from agents import curriculum as C
from agents.evaluation.registry import then_cmaes, unfold_tune
from agents.search.common import MatchConfig, MatchResult, render_params
from agents.search.pitch_first import MAX_COARSE_ST, fold_note
from jaxsynth import params as P
from jaxsynth.losses import matching_loss
from jaxsynth.synth import SynthConfig

CFG = MatchConfig(synth=SynthConfig(duration_s=0.25))
I = P.INDEX


def _phys(x):
    return np.asarray(P.denormalize(jnp.asarray(x)), np.float64)


def _tunes(x):
    """(T, 2) semitones of each oscillator re the render note."""
    p = _phys(x)
    return np.stack([p[:, I[f"osc{k}.coarse_st"]] - MAX_COARSE_ST + p[:, I[f"osc{k}.fine_cents"]] / 100.0
                     for k in (1, 2)], axis=1)


def test_unfold_moves_the_first_tune_into_the_note_and_fold_undoes_it():
    x = np.asarray(P.snap(jax.random.uniform(jax.random.key(3), (400, P.N_PARAMS))))
    u, notes = unfold_tune(x, 60.0, P.DEFAULT_PARAMS01)
    t_x, t_u = _tunes(x), _tunes(u)
    # the first oscillator sits at the default's tune (0), the note carries its old tune
    np.testing.assert_allclose(t_u[:, 0], 0.0, atol=1e-3)
    np.testing.assert_allclose(notes - 60.0, t_x[:, 0], atol=1e-3)  # fine tune: float32 of +-100 cents
    # where nothing was clipped, the interval and the key-tracked cutoff are kept, and fold undoes it
    p = _phys(x)
    cut = p[:, I["filter.cutoff_hz"]] * 2.0 ** (-p[:, I["filter.key_track"]] * (notes - 60.0) / 12.0)
    spec = P.SPECS[I["filter.cutoff_hz"]]
    plain = (np.abs(t_x[:, 1] - t_x[:, 0]) <= MAX_COARSE_ST) & (cut >= spec.low) & (cut <= spec.high)
    assert plain.mean() > 0.5
    np.testing.assert_allclose((t_u[:, 1] - t_u[:, 0])[plain], (t_x[:, 1] - t_x[:, 0])[plain], atol=1e-3)
    f, f_notes = fold_note(u, notes, 60.0)
    back = plain & (f_notes == 60.0)
    assert back.mean() > 0.5
    np.testing.assert_allclose(_tunes(f)[back], t_x[back], atol=1e-3)
    np.testing.assert_allclose(_phys(f)[back, I["filter.cutoff_hz"]], p[back, I["filter.cutoff_hz"]], rtol=1e-4)


def test_unfolded_preset_sounds_the_same_at_its_note():
    """The unfolded preset played at its render note is the original at the reference note
    (where nothing was clipped): its matching loss against the original is far below that of
    the same preset a semitone off (float32 differences in the phase increment only)."""
    x = C.heldout_presets(0, 3, 12)
    u, notes = unfold_tune(x, CFG.note, P.DEFAULT_PARAMS01)
    _, f_orig = render_params(x, CFG)
    _, f_unf = render_params(u, CFG, notes)
    _, f_semi = render_params(x, CFG, np.full(12, CFG.note + 1.0, np.float32))
    same = np.asarray(matching_loss(f_unf, f_orig, CFG.weights).total)
    semi = np.asarray(matching_loss(f_semi, f_orig, CFG.weights).total)
    p, t = _phys(x), _tunes(x)
    cut = p[:, I["filter.cutoff_hz"]] * 2.0 ** (-p[:, I["filter.key_track"]] * (notes - CFG.note) / 12.0)
    spec = P.SPECS[I["filter.cutoff_hz"]]
    plain = (np.abs(t[:, 1] - t[:, 0]) <= MAX_COARSE_ST) & (cut >= spec.low) & (cut <= spec.high)
    moved = plain & (np.abs(notes - CFG.note) > 0.5)
    assert moved.sum() >= 4
    assert np.all(same[plain] < 0.01), same
    assert np.all(semi[moved] > 10 * same[moved]), (same, semi)


def _fixed(x):
    """A first stage that proposes ``x`` (one render)."""
    def first(key, target, module_mask, budget, cfg=CFG, base01=P.DEFAULT_PARAMS01, **extras):
        _, feats = render_params(x, cfg)
        terms = matching_loss(feats, target, cfg.weights)
        return MatchResult(jnp.asarray(x), terms.total, terms, np.array([1]), terms.total[:, None],
                           jnp.asarray(x)[:, None])
    return first


def test_then_cmaes_holding_the_pitch_keeps_the_first_stages_tune():
    targets = C.heldout_presets(1, 3, 6)
    _, tf = render_params(targets, CFG)
    start = C.heldout_presets(2, 3, 6)  # another preset per target, with its own tune
    mask = C.stage_module_masks()[3]
    res = then_cmaes(_fixed(start), first_budget=1, sigma0=0.3, hold_pitch=True)(
        jax.random.key(0), tf, mask, 41, CFG)
    assert int(res.trace_renders[-1]) <= 41
    notes = np.full(6, CFG.note) if res.render_note is None else np.asarray(res.render_note)
    heard = _tunes(np.asarray(res.best_params01))[:, 0] + (notes - CFG.note)
    np.testing.assert_allclose(heard, _tunes(start)[:, 0], atol=1e-3)
    assert np.all(np.asarray(res.best_loss) <= np.asarray(_fixed(start)(None, tf, mask, 1).best_loss) + 1e-6)
    assert np.any(np.asarray(res.best_loss) < np.asarray(_fixed(start)(None, tf, mask, 1).best_loss))
