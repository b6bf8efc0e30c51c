"""Tests for agents/target_bank.py: shapes, determinism, curriculum consistency (locked modules
at defaults, no held-out preset inside), cached features consistent with the loss, the
start-loss table, and the memory figure."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import curriculum as C
from agents import env as E
from agents import target_bank as TB
from jaxsynth import params as P
from jaxsynth.losses import matching_loss

CFG = E.small_config()
CFG_RANDOM = E.small_config(init="random")


@pytest.fixture(scope="module")
def bank():
    return TB.build_bank(jax.random.key(0), CFG)


@pytest.fixture(scope="module")
def bank_random():
    return TB.build_bank(jax.random.key(0), CFG_RANDOM)


def test_shapes(bank, bank_random):
    S, B, F, M = C.N_STAGES, CFG.bank_size, CFG.num_frames, CFG.n_mels
    assert bank.params01.shape == (S, B, P.N_PARAMS)
    assert bank.log_mel.shape == (S, B, F, M)
    assert bank.features.log_mel.shape == (S, B, F, M)
    assert bank.features.loudness_lufs.shape == (S, B)
    assert len(bank.features.mrstft_mag) == len(CFG.features.mrstft_fft_sizes)
    assert bank.start_params01.shape == (S, 1, P.N_PARAMS)  # init="default": one start
    assert bank.start_loss.shape == (S, 1, B)
    assert bank_random.start_params01.shape == (S, CFG.n_start_presets, P.N_PARAMS)
    assert bank_random.start_loss.shape == (S, CFG.n_start_presets, B)
    np.testing.assert_array_equal(np.asarray(bank.start_params01[:, 0]),
                                  np.broadcast_to(P.DEFAULT_PARAMS01, (S, P.N_PARAMS)))


def test_same_key_same_bank_bit_for_bit(bank):
    again = TB.build_bank(jax.random.key(0), CFG)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 jax.tree.map(lambda x: x if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                              else jax.random.key_data(x), bank),
                 jax.tree.map(lambda x: x if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                              else jax.random.key_data(x), again))
    other = TB.build_bank(jax.random.key(1), CFG)
    assert not np.array_equal(np.asarray(bank.params01), np.asarray(other.params01))


def test_targets_follow_the_curriculum_and_exclude_heldout(bank, bank_random):
    for s in range(C.N_STAGES):
        locked = ~np.asarray(P.param_mask(C.stage_module_masks()[s]))
        for x in (np.asarray(bank.params01[s]), np.asarray(bank_random.start_params01[s])):
            np.testing.assert_array_equal(x[:, locked], np.broadcast_to(P.DEFAULT_PARAMS01[locked], x[:, locked].shape))
        t = np.asarray(bank.params01[s])
        assert not np.any(C.is_heldout(t))
        held = C.heldout_presets(0, s, 256)
        assert not np.any(np.all(t[:, None] == held[None], axis=-1))


def test_cached_features_and_start_loss_are_consistent(bank_random):
    """The observation log-mel is the level-restored feature log-mel, and start_loss equals
    the matching loss recomputed from freshly rendered start features."""
    np.testing.assert_allclose(np.asarray(bank_random.log_mel),
                               np.asarray(TB.level_log_mel(bank_random.features)), rtol=0, atol=1e-5)
    s = 1
    starts = np.asarray(bank_random.start_params01[s])
    mel, feats = TB.render_features(starts, bank_random.render_key, CFG_RANDOM)
    np.testing.assert_allclose(mel, np.asarray(bank_random.start_log_mel[s]), atol=1e-4)
    target = jax.tree.map(lambda x: x[s], bank_random.features)
    pair = jax.jit(jax.vmap(jax.vmap(lambda a, b: matching_loss(a, b, CFG_RANDOM.loss_weights).total,
                                     in_axes=(None, 0)), in_axes=(0, None)))
    loss = pair(feats, target)
    np.testing.assert_allclose(np.asarray(loss), np.asarray(bank_random.start_loss[s]), rtol=1e-4, atol=1e-4)
    # a target against itself: loss ~0, and larger against other targets
    self_loss = jnp.diagonal(pair(target, target))
    np.testing.assert_allclose(np.asarray(self_loss), 0.0, atol=1e-5)
    assert float(jnp.min(loss)) > 1e-2


def test_random_init_reset_draws_starts_and_their_loss(bank_random):
    """init="random": resets draw different start presets of the stage, and the state's loss
    is the bank's start-vs-target loss of exactly that pair (no render at reset)."""
    env = E.SynthMatchEnv(CFG_RANDOM)
    p = env.make_params(bank_random, stage=2)
    obs, st = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(jax.random.split(jax.random.key(3), 16), p)
    starts = np.asarray(bank_random.start_params01[2])
    j = [int(np.flatnonzero(np.all(starts == row, axis=1))[0]) for row in np.asarray(st.params01)]
    i = np.asarray(st.target_index) - 2 * CFG_RANDOM.bank_size
    assert len(set(j)) > 1 and np.all((i >= 0) & (i < CFG_RANDOM.bank_size))
    np.testing.assert_array_equal(np.asarray(st.loss), np.asarray(bank_random.start_loss[2])[j, i])
    np.testing.assert_array_equal(np.asarray(obs.current_log_mel), np.asarray(bank_random.start_log_mel[2])[j])


def test_target_lookup_is_flat_over_stages(bank):
    i = 2 * CFG.bank_size + 3
    p, mel, f = bank.target(jnp.int32(i))
    np.testing.assert_array_equal(np.asarray(p), np.asarray(bank.params01[2, 3]))
    np.testing.assert_array_equal(np.asarray(mel), np.asarray(bank.log_mel[2, 3]))
    np.testing.assert_array_equal(np.asarray(f.mrstft_mag[0]), np.asarray(bank.features.mrstft_mag[0][2, 3]))


def test_bytes_per_target_matches_the_bank(bank):
    per = TB.bytes_per_target(CFG)
    n = C.N_STAGES * CFG.bank_size
    target_bytes = sum(x.nbytes for x in jax.tree.leaves((bank.params01, bank.log_mel, bank.features)))
    assert target_bytes == per * n
    assert TB.bank_bytes(bank) >= target_bytes
    # default analysis: ~0.36 MB per target, dominated by the MR-STFT magnitudes
    assert 300_000 < TB.bytes_per_target(E.EnvConfig()) < 450_000


def test_heldout_bank_shares_render_key_and_starts(bank):
    held = TB.build_heldout_bank(jax.random.key(0), CFG, seed=5, n=4)
    assert held.params01.shape == (C.N_STAGES, 4, P.N_PARAMS)
    assert np.all(C.is_heldout(np.asarray(held.params01)))
    np.testing.assert_array_equal(np.asarray(jax.random.key_data(held.render_key)),
                                  np.asarray(jax.random.key_data(bank.render_key)))
    np.testing.assert_array_equal(np.asarray(held.start_params01), np.asarray(bank.start_params01))
    with pytest.raises(ValueError, match="one set per stage"):
        TB.build_bank(jax.random.key(0), CFG, targets=np.asarray(held.params01[0]))


def test_bad_inputs():
    with pytest.raises(TypeError, match="PRNG key"):
        TB.build_bank(0, CFG)
    with pytest.raises(P.PresetError, match="NaN"):
        TB.render_features(np.full((2, P.N_PARAMS), np.nan, np.float32), jax.random.key(0), CFG)
