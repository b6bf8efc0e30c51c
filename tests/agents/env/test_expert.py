"""agents/env/expert.py: the ground-truth teacher's action reduces the parameter error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import curriculum as C
from agents import env as E
from agents.env.expert import audible, expert_action, parameter_error
from jaxsynth import params as P

N = 256


@pytest.mark.parametrize("stage", range(C.N_STAGES))
@pytest.mark.parametrize("base", [0.1, 0.25])
def test_teacher_action_decreases_parameter_error(stage, base):
    """On random (state, target) pairs of the stage, one teacher edit applied by the env's own
    ``apply_action`` (clip + snap) strictly lowers the symmetry-aware parameter error of every
    pair that is not solved yet, and never raises it."""
    k1, k2 = jax.random.split(jax.random.key(stage))
    mask = C.stage_module_masks()[stage]
    state = P.sample_params01(k1, mask, shape=(N,))
    target = P.sample_params01(k2, mask, shape=(N,))
    md = jnp.asarray(E.default_max_delta(base))
    err = jax.vmap(parameter_error, in_axes=(0, 0, None))
    before = np.asarray(err(state, target, stage))
    module, delta = jax.vmap(expert_action, in_axes=(0, 0, None, None))(state, target, stage, md)
    new, _, allowed = jax.vmap(E.apply_action, in_axes=(0, 0, None, None))(
        state, E.Action(module, delta), jnp.int32(stage), md)
    after = np.asarray(err(new, target, stage))
    assert np.all(np.asarray(allowed))
    assert np.all(before > 0)
    assert np.all(after < before - 1e-6), (before - after).min()


def test_teacher_reaches_the_target_and_respects_symmetries():
    """Repeated teacher edits reach zero error; swapping the two oscillators of the target (an
    identical sound) leaves the error unchanged; a parameter silent in the target (osc2 shape
    at osc2 level 0) counts no error."""
    stage = 3
    k1, k2 = jax.random.split(jax.random.key(7))
    mask = C.stage_module_masks()[stage]
    state = P.sample_params01(k1, mask, shape=(64,))
    target = P.sample_params01(k2, mask, shape=(64,))
    md = jnp.asarray(E.default_max_delta(0.25))
    for _ in range(60):
        m, d = jax.vmap(expert_action, in_axes=(0, 0, None, None))(state, target, stage, md)
        state = jax.vmap(E.apply_action, in_axes=(0, 0, None, None))(state, E.Action(m, d), jnp.int32(stage), md)[0]
    np.testing.assert_allclose(np.asarray(jax.vmap(parameter_error, in_axes=(0, 0, None))(state, target, stage)),
                               0.0, atol=1e-5)
    i1 = [P.INDEX[f"osc1.{f}"] for f in ("shape", "pulse_width", "coarse_st", "fine_cents", "level")]
    i2 = [P.INDEX[f"osc2.{f}"] for f in ("shape", "pulse_width", "coarse_st", "fine_cents", "level")]
    t = np.asarray(target[0])
    swapped = t.copy()
    swapped[i1], swapped[i2] = t[i2], t[i1]
    s = np.asarray(P.sample_params01(jax.random.key(3), mask))
    assert float(parameter_error(s, t, stage)) == pytest.approx(float(parameter_error(s, swapped, stage)), abs=1e-5)
    silent = t.copy()
    silent[P.INDEX["osc2.level"]] = 0.0
    assert not bool(audible(jnp.asarray(silent))[P.INDEX["osc2.shape"]])
    moved = s.copy()
    moved[P.INDEX["osc2.shape"]] = 1.0 - s[P.INDEX["osc2.shape"]]
    assert float(parameter_error(s, silent, 1)) == pytest.approx(float(parameter_error(moved, silent, 1)))
