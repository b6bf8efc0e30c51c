"""Tests for agents/curriculum.py: stage masks, held-out sets (fixed by seed, disjoint from
training draws by construction, same distribution), and the D4 advancement rule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import curriculum as C
from jaxsynth import params as P


def test_stages_unlock_monotonically_and_end_with_everything():
    masks = C.stage_module_masks()
    assert masks.shape == (C.N_STAGES, P.N_MODULES) and masks.dtype == bool
    assert C.N_STAGES >= 3
    assert masks[0].sum() == 2 and set(np.array(P.MODULES)[masks[0]]) == {"filter", "amp_env"}
    for s in range(1, C.N_STAGES):
        assert np.all(masks[s] >= masks[s - 1]) and masks[s].sum() > masks[s - 1].sum()
    assert masks[-1].all()
    assert C.stage_thresholds().shape == (C.N_STAGES,)


@pytest.mark.parametrize("stage", range(C.N_STAGES))
def test_presets_lock_modules_at_defaults_and_snap(stage):
    x = C.heldout_presets(3, stage, 64)
    t = C.training_presets(jax.random.key(3), stage, 64)
    locked = ~np.asarray(P.param_mask(C.stage_module_masks()[stage]))
    for arr in (x, t):
        assert arr.shape == (64, P.N_PARAMS) and arr.dtype == np.float32
        np.testing.assert_array_equal(arr[:, locked], np.broadcast_to(P.DEFAULT_PARAMS01[locked], arr[:, locked].shape))
        np.testing.assert_array_equal(arr, np.asarray(P.snap(arr)))
        assert np.all((arr >= 0) & (arr <= 1))
        # unlocked parameters do vary
        assert np.all(arr[:, ~locked].std(axis=0) > 0.05)


def test_heldout_fixed_by_seed():
    a, b, c = C.heldout_presets(7, 1, 32), C.heldout_presets(7, 1, 32), C.heldout_presets(8, 1, 32)
    np.testing.assert_array_equal(a, b)
    assert not np.any(np.all(a == c, axis=1))
    # different stages draw different presets even with one seed
    assert not np.allclose(C.heldout_presets(7, 0, 32)[:, P.INDEX["filter.cutoff_hz"]],
                           C.heldout_presets(7, 1, 32)[:, P.INDEX["filter.cutoff_hz"]])


@pytest.mark.parametrize("stage", range(C.N_STAGES))
def test_heldout_never_in_training_draws(stage):
    """Disjoint by construction: training presets lie only in even partition bins, held-out
    presets only in odd ones, whatever the keys (here many training keys, one seed even equal
    to the held-out seed)."""
    held = C.heldout_presets(0, stage, 512)
    assert np.all(C.is_heldout(held))
    for k in range(4):
        train = C.training_presets(jax.random.key(k), stage, 512)
        assert not np.any(C.is_heldout(train))
        equal = np.all(train[:, None, :] == held[None, :, :], axis=-1)
        assert not equal.any()
        # not even close in the partition coordinate's bin
        assert set(np.asarray(C.partition_bin(train)).tolist()).isdisjoint(
            np.asarray(C.partition_bin(held)).tolist())


def test_heldout_and_training_share_a_distribution():
    """Interleaved bins keep the partition coordinate uniform in both halves (KS test against
    U[0,1] from scipy, not our code), so held-out presets are in-distribution."""
    from scipy import stats

    i = P.INDEX[C.PARTITION_PARAM]
    held = C.heldout_presets(1, 0, 4000)[:, i]
    train = C.training_presets(jax.random.key(1), 0, 4000)[:, i]
    assert stats.kstest(held, "uniform").pvalue > 1e-3
    assert stats.kstest(train, "uniform").pvalue > 1e-3
    assert stats.ks_2samp(held, train).pvalue > 1e-3


def test_heldout_rejects_bad_arguments():
    with pytest.raises(ValueError, match="stage"):
        C.heldout_presets(0, C.N_STAGES, 4)
    with pytest.raises(ValueError, match="positive"):
        C.heldout_presets(0, 0, 0)
    with pytest.raises(TypeError, match="seed"):
        C.heldout_presets(jax.random.key(0), 0, 4)


def test_advance_fires_exactly_at_the_crossing():
    thr = jnp.asarray(C.stage_thresholds())
    adv = jax.jit(C.advance)
    for s in range(C.N_STAGES - 1):
        t = np.float32(thr[s])
        below = np.nextafter(t, np.float32(-np.inf), dtype=np.float32)
        assert int(adv(s, t, thr)) == s  # equal: not below, no promotion
        assert int(adv(s, below, thr)) == s + 1  # one ulp below: promotion
        assert int(adv(s, np.nextafter(t, np.float32(np.inf), dtype=np.float32), thr)) == s
        assert int(adv(s, jnp.nan, thr)) == s
    last = C.N_STAGES - 1
    assert int(adv(last, -1.0, thr)) == last  # never past the last stage


def test_advance_is_traced_not_recompiled():
    traces = []

    @jax.jit
    def f(stage, loss, thr):
        traces.append(1)
        return C.advance(stage, loss, thr)

    thr = jnp.asarray(C.stage_thresholds())
    out = [int(f(jnp.int32(s), jnp.float32(v), thr)) for s in range(C.N_STAGES) for v in (0.0, 10.0)]
    assert len(traces) == 1
    assert out == [1, 0, 2, 1, 3, 2, 3, 3]
    # vmaps over seeds too
    stages = jax.vmap(C.advance, in_axes=(0, 0, None))(jnp.array([0, 1, 2]), jnp.array([0.0, 9.0, 0.0]), thr)
    np.testing.assert_array_equal(np.asarray(stages), [1, 1, 3])
