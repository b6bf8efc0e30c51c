"""agents/evaluation/registry.tune_to_f0: the learned matchers' pitch-first step transposes a
guessed preset so that its louder oscillator plays the target's f0 (no render), keeps the
second oscillator's interval, and leaves unpitched targets and out-of-range transpositions
alone. Checked against the parameters' physical values (semitones and cents)."""

import jax.numpy as jnp
import numpy as np

from agents.evaluation.registry import tune_to_f0
from jaxsynth import params as P


def _preset(c1, f1, c2, f2, l1, l2):
    phys = np.asarray(P.denormalize(jnp.asarray(P.DEFAULT_PARAMS01)), np.float64).copy()
    for name, v in (("osc1.coarse_st", c1 + 24), ("osc1.fine_cents", f1), ("osc2.coarse_st", c2 + 24),
                    ("osc2.fine_cents", f2), ("osc1.level", l1), ("osc2.level", l2)):
        phys[P.INDEX[name]] = v
    return np.asarray(P.snap(P.normalize(jnp.asarray(phys, jnp.float32))))


def _tunes(x01):
    phys = np.asarray(P.denormalize(jnp.asarray(x01)), np.float64)
    t = lambda k: phys[:, P.INDEX[f"osc{k}.coarse_st"]] - 24 + phys[:, P.INDEX[f"osc{k}.fine_cents"]] / 100
    return t(1), t(2)


def test_louder_oscillator_lands_on_the_f0_and_the_interval_is_kept():
    x = np.stack([_preset(-12, 10.0, -5, 0.0, 0.9, 0.4),  # osc1 louder, osc2 7 st above (less 10 c)
                  _preset(0, 0.0, 12, -20.0, 0.2, 0.8)])  # osc2 louder
    target = np.array([5.3, -7.45])
    out = tune_to_f0(x, target, np.array([True, True]))
    t1_before, t2_before = _tunes(x)
    t1, t2 = _tunes(out)
    # fine tune is a float32 parameter in [-100, 100] cents: 1e-3 semitones (0.1 c) covers
    # its normalise/denormalise round trip
    np.testing.assert_allclose([t1[0], t2[1]], target, atol=1e-3)
    np.testing.assert_allclose(t2 - t1, t2_before - t1_before, atol=2e-3)
    # nothing but the four tune parameters moves
    tune_idx = [P.INDEX[n] for n in ("osc1.coarse_st", "osc1.fine_cents", "osc2.coarse_st", "osc2.fine_cents")]
    other = np.setdiff1d(np.arange(P.N_PARAMS), tune_idx)
    np.testing.assert_array_equal(out[:, other], x[:, other])


def test_unpitched_nonfinite_and_out_of_range_are_unchanged():
    x = np.stack([_preset(0, 0.0, 12, 0.0, 0.9, 0.5)] * 3)
    out = tune_to_f0(x, np.array([3.0, np.nan, 20.0]), np.array([False, True, True]))
    # row 0 unpitched, row 1 no estimate, row 2 would put osc2 at +32 semitones (range +-24)
    np.testing.assert_array_equal(out, x)
    # a silent second oscillator does not block the move: its tune is clipped instead
    y = _preset(0, 0.0, 12, 0.0, 0.9, 0.0)[None]
    moved = tune_to_f0(y, np.array([20.0]), np.array([True]))
    t1, t2 = _tunes(moved)
    np.testing.assert_allclose(t1, [20.0], atol=1e-3)
    assert t2[0] == 24.0
