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
from agents.env import target_bank as TB
from jaxsynth import crepe as CR
from jaxsynth import losses as L
from jaxsynth import params as P
from jaxsynth import perceptual as PE
from jaxsynth import reward as R
from jaxsynth.losses import matching_loss
from jaxsynth.synth import render_batch

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
    # default analysis: dominated by the MR-STFT magnitudes, (1 + samples // hop) frames of
    # n_fft / 2 + 1 float32 bins per resolution (~0.27 MB of ~0.30 MB per target)
    f = E.EnvConfig().features
    mrstft = sum(4 * (1 + f.num_samples // hop) * (n // 2 + 1) for n, hop in f.mrstft_resolutions)
    assert mrstft < TB.bytes_per_target(E.EnvConfig()) < 1.2 * mrstft


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


# ------------------------------------------------------------------ CREPE terms (issue 8)
# With a CREPE loss weight > 0 the bank caches each target's CREPE features (computed once) and
# the env step uses them; with both weights 0 nothing CREPE-related exists or runs.

LW_P = L.LossWeights(crepe_embedding=0.5, pitch_posterior_cents=0.01)
CFG_P = E.small_config(loss_weights=LW_P)


def _no_crepe(*_a, **_k):
    raise AssertionError("CREPE weights were requested although every CREPE loss weight is 0")


def test_crepe_off_bank_is_the_old_bank_and_loads_no_weights(bank, monkeypatch):
    """Weights 0 (default): no CREPE field, no weights loaded (even with a perceptual config
    given), and the same leaves bit-for-bit; the bytes figure is unchanged too."""
    assert bank.perceptual is None and bank.crepe_weights is None
    monkeypatch.setattr(CR, "load_weights", _no_crepe)
    monkeypatch.setattr(CR, "load_weights_numpy", _no_crepe)
    monkeypatch.setattr(PE, "analyze", _no_crepe)
    cfg = E.small_config(perceptual=PE.PerceptualConfig(embedding_layer=3))
    again = TB.build_bank(jax.random.key(0), cfg)
    assert again.perceptual is None and again.crepe_weights is None
    unkey = lambda b: jax.tree.map(lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(
        x.dtype, jax.dtypes.prng_key) else x, b)
    a, b = jax.tree.leaves(unkey(bank)), jax.tree.leaves(unkey(again))
    assert len(a) == len(b) == len(jax.tree.leaves(unkey(bank.replace(perceptual=None))))
    for x, y in zip(a, b):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()
    assert TB.bytes_per_target(cfg) == TB.bytes_per_target(CFG)


def test_crepe_off_env_step_is_the_old_program(bank):
    """Weights 0: the traced env step is the same program whatever perceptual config is set,
    contains no convolution (CREPE is the only conv in the step) and returns plain LossTerms."""
    jaxprs = []
    for cfg in (CFG, E.small_config(perceptual=PE.PerceptualConfig(embedding_layer=3))):
        env = E.SynthMatchEnv(cfg)
        p = env.make_params(bank, stage=1)
        _, st = env.reset(jax.random.key(1), p)
        act = E.Action(module=jnp.int32(1), delta=jnp.full(P.N_PARAMS, 0.3, jnp.float32))
        closed = jax.make_jaxpr(env.step, return_shape=True)(jax.random.key(2), st, act, p)
        jaxprs.append(str(closed[0]))
        assert type(closed[1][5]["loss_terms"]) is L.LossTerms
    assert jaxprs[0] == jaxprs[1]
    assert "conv_general_dilated" not in jaxprs[0]


@pytest.fixture(scope="module")
def crepe_weights():
    try:
        return CR.load_weights("tiny")
    except CR.CrepeUnavailableError as err:  # CI installs the [crepe] extra; locally it may be absent
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def bank_p(crepe_weights):
    return TB.build_bank(jax.random.key(0), CFG_P)


def _fresh_perceptual(params01, render_key, cfg):
    """Render presets one call, no chunking, and analyse them with CREPE (the uncached path)."""
    keys = jnp.broadcast_to(render_key, (params01.shape[0],))
    audio = render_batch(jnp.asarray(params01), keys, cfg.synth, note=cfg.note, velocity=cfg.velocity)
    return audio, PE.target_features(audio, TB.perceptual_config(cfg))


def test_crepe_on_bank_caches_target_features_equal_to_fresh_ones(bank, bank_p):
    """Cached CREPE features equal a fresh render + analysis (tolerance: the synth renders a
    batch of 8 and a batch of 4 with different float reassociation, measured max 2e-6 on the
    activations); the non-CREPE part of the bank is bit-identical to the CREPE-off bank; the
    start losses are the CREPE-off ones plus the weighted CREPE terms."""
    assert bank_p.crepe_weights is not None and bank_p.perceptual.activations.shape[:2] == (C.N_STAGES, CFG_P.bank_size)
    s = 1  # one fresh batch: 4 targets of stage s and its start preset (one compilation)
    presets = np.concatenate([np.asarray(bank_p.params01[s, :4]), np.asarray(bank_p.start_params01[s])])
    _, fresh_all = _fresh_perceptual(presets, bank_p.render_key, CFG_P)
    fresh, start_p = jax.tree.map(lambda x: x[:4], fresh_all), jax.tree.map(lambda x: x[4:], fresh_all)
    cached = jax.tree.map(lambda x: x[s, :4], bank_p.perceptual)
    np.testing.assert_allclose(np.asarray(cached.activations), np.asarray(fresh.activations), atol=1e-4)
    np.testing.assert_allclose(np.asarray(cached.frame_db), np.asarray(fresh.frame_db), atol=1e-3)
    scale = float(np.abs(np.asarray(fresh.embedding)).max())
    np.testing.assert_allclose(np.asarray(cached.embedding), np.asarray(fresh.embedding), atol=1e-4 * scale)
    for x, y in zip(jax.tree.leaves((bank.params01, bank.log_mel, bank.features, bank.start_log_mel)),
                    jax.tree.leaves((bank_p.params01, bank_p.log_mel, bank_p.features, bank_p.start_log_mel))):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()
    pcfg = TB.perceptual_config(CFG_P)
    one = lambda tp: (0.5 * PE.embedding_distance(jax.tree.map(lambda x: x[0], start_p), tp, pcfg)
                      + 0.01 * PE.pitch_posterior_distance(jax.tree.map(lambda x: x[0], start_p), tp, pcfg))
    extra = jax.vmap(one)(jax.tree.map(lambda x: x[s], bank_p.perceptual))
    assert float(jnp.max(extra)) > 0.1  # the CREPE terms matter for these starts
    np.testing.assert_allclose(np.asarray(bank_p.start_loss[s, 0]), np.asarray(bank.start_loss[s, 0] + extra),
                               rtol=1e-4, atol=1e-4)
    assert TB.bytes_per_target(CFG_P) - TB.bytes_per_target(CFG) == sum(
        x[0, 0].nbytes for x in jax.tree.leaves(bank_p.perceptual))


# Runs in CI (guards the cached CREPE target features): compiles the env step with CREPE (~40 s on a loaded 2-core CPU)
def test_crepe_on_env_step_reward_equals_the_uncached_path(bank_p):
    """The env step with CREPE terms on gives the same loss and reward with the bank's cached
    target features as with freshly computed ones swapped into the bank, and a wrong target's
    CREPE features change it (so the cached values are what the step uses)."""
    env = E.SynthMatchEnv(CFG_P)
    p = env.make_params(bank_p, stage=1)
    _, st = jax.vmap(env.reset_to, in_axes=(0, 0, None))(jnp.arange(3), jnp.zeros(3, jnp.int32), p)
    act = E.Action(module=jnp.array([2, 2, 2], jnp.int32), delta=jnp.full((3, P.N_PARAMS), 0.4, jnp.float32))
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    keys = jax.random.split(jax.random.key(2), 3)
    out = step(keys, st, act, p)
    _, fresh = _fresh_perceptual(np.asarray(bank_p.params01).reshape(-1, P.N_PARAMS), bank_p.render_key, CFG_P)
    per_stage = jax.tree.map(lambda x: x.reshape((C.N_STAGES, CFG_P.bank_size) + x.shape[1:]), fresh)
    out_fresh = step(keys, st, act, p.replace(bank=bank_p.replace(perceptual=per_stage)))
    terms = out[5]["loss_terms"]
    assert type(terms) is L.LossTerms and float(jnp.min(terms.pitch_posterior_cents)) >= 0
    assert float(jnp.max(terms.crepe_embedding)) > 0
    np.testing.assert_allclose(np.asarray(out[2]), np.asarray(out_fresh[2]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(terms.total), np.asarray(out_fresh[5]["loss_terms"].total), rtol=1e-4)
    wrong = jax.tree.map(lambda x: jnp.roll(x, 1, axis=1), bank_p.perceptual)
    out_wrong = step(keys, st, act, p.replace(bank=bank_p.replace(perceptual=wrong)))
    assert float(jnp.max(jnp.abs(out_wrong[5]["loss_terms"].crepe_embedding - terms.crepe_embedding))) > 1e-3


def test_crepe_terms_config_errors(bank):
    with pytest.raises(ValueError, match="perceptual_scale"):
        E.small_config(reward=R.RewardConfig(perceptual_scale=0.1))
    with pytest.raises(ValueError, match="sample_rate"):
        TB.perceptual_config(E.small_config(perceptual=PE.PerceptualConfig(sample_rate=16000)))
    with pytest.raises(ValueError, match="no cached CREPE features"):
        bank.target_perceptual(jnp.int32(0))
