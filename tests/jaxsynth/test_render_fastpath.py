"""The render's optimized inner loop equals the reference building blocks it replaces.

``synth._voice_wave`` (the per-sample oscillator with all shapes derived from one wrap) must
equal ``oscillators.morph`` (tested against np.sin / analytic shapes in test_oscillators.py),
and ``filters.svf_tick`` inside ``svf`` must still match scipy's bilinear biquad
(test_filters.py covers that; here: the shared tick equals the closed-form TPT step).
Tolerance 2e-6 absolute on waveforms within +-1.2: the two forms differ only in float32
rounding of the phase wrap (a few 1e-8 cycles) times the waveform's slope (the measured max
difference is 7e-7).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxsynth import oscillators as O
from jaxsynth import params as P
from jaxsynth import synth as S
from jaxsynth.filters import svf_tick


def test_voice_wave_equals_oscillators_morph_for_every_shape():
    key = jax.random.key(0)
    phase = jnp.concatenate([jax.random.uniform(key, (20000,)), jnp.linspace(0.0, 1.0, 20001)[:-1]])
    dt = jax.random.uniform(jax.random.fold_in(key, 1), phase.shape, minval=0.02, maxval=0.2)
    width = jax.random.uniform(jax.random.fold_in(key, 2), phase.shape, minval=0.05, maxval=0.95)

    @jax.jit
    def both(shape):  # one compile for every shape value
        w = O.morph_weights(jnp.full(phase.shape, shape))
        coef = jnp.stack([w[:, 0], w[:, 1], w[:, 2] + w[:, 3], -w[:, 3]])
        return O.morph(phase, dt, w, width), S._voice_wave(phase + 0.5, 0.5 / dt, coef, width)

    for shape in (0.0, 1 / 3, 0.5, 2 / 3, 0.9, 1.0):
        ref, got = both(jnp.float32(shape))
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=2e-6, err_msg=f"shape {shape}")


def test_voice_constants_match_the_parameter_table():
    params01 = P.sample_params01(jax.random.key(3), np.ones(P.N_MODULES, bool), shape=(8,))
    phys = P.denormalize(params01)
    note = jnp.full((8,), 64.0)
    semis, coef, width = jax.jit(S._voice_constants)(params01, phys, note)
    assert semis.shape == (2 * P.MAX_UNISON, 8) and coef.shape == (2 * P.MAX_UNISON, 4, 8)
    n_voices = np.asarray(P.choice_index(params01, "unison.voices")) + 1
    for o in (1, 2):
        level = np.asarray(phys[:, P.INDEX[f"osc{o}.level"]])
        w = np.asarray(O.morph_weights(phys[:, P.INDEX[f"osc{o}.shape"]]))
        for v in range(P.MAX_UNISON):
            i = (o - 1) * P.MAX_UNISON + v
            gain = np.where(v < n_voices, 1.0 / np.sqrt(n_voices), 0.0) * level
            np.testing.assert_allclose(np.asarray(coef[i, 0]), gain * w[:, 0], rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(np.asarray(coef[i, 3]), -gain * w[:, 3], rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(np.asarray(width[i]), np.asarray(phys[:, P.INDEX[f"osc{o}.pulse_width"]]))


def test_svf_tick_is_the_tpt_step():
    rng = np.random.default_rng(0)
    s1, s2, x, g, k = (rng.uniform(-1, 1, 16), rng.uniform(-1, 1, 16), rng.uniform(-1, 1, 16),
                       rng.uniform(0.01, 3.0, 16), rng.uniform(0.1, 2.0, 16))
    (n1, n2), (lp, bp, hp) = svf_tick((s1, s2), x, g, k)
    # Zavalishin (2012) eq. 4.x: hp = (x - (g + k) s1 - s2) / (1 + g (g + k)), in float64
    hp_ref = (x - (g + k) * s1 - s2) / (1 + g * (g + k))
    bp_ref = g * hp_ref + s1
    lp_ref = g * bp_ref + s2
    for got, ref in ((hp, hp_ref), (bp, bp_ref), (lp, lp_ref), (n1, bp_ref + g * hp_ref), (n2, lp_ref + g * bp_ref)):
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-6)
