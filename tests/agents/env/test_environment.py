"""Tests for agents/env/ (config, spaces, environment): shapes/dtypes under vmap, no host callbacks, locked modules,
clipping and snapping, reward terms, the to-target action, no-ops, determinism, auto-reset,
adaptive lambda, stage switching without recompilation, and bad actions.

Everything runs on ``small_config()`` (0.15 s clips, 8 targets per stage) and shares ONE
compiled vmapped ``step`` (compilation dominates the time of this file).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import curriculum as C
from agents import env as E
from agents.env.target_bank import build_bank
from agents.rendering import env_render_features
from jaxsynth import params as P
from jaxsynth.synth import SynthConfig

CFG = E.small_config()
ENV = E.SynthMatchEnv(CFG)
N_ENVS = 6
TRACES = []


def _counted_step(keys, state, action, params):
    TRACES.append(1)
    return jax.vmap(ENV.step, in_axes=(0, 0, 0, None))(keys, state, action, params)


STEP = jax.jit(_counted_step)
RESET = jax.jit(jax.vmap(ENV.reset, in_axes=(0, None)))


@pytest.fixture(scope="module")
def bank():
    return build_bank(jax.random.key(0), CFG)


@pytest.fixture(scope="module")
def params(bank):
    return ENV.make_params(bank, stage=0)


def _keys(seed, n=N_ENVS):
    return jax.random.split(jax.random.key(seed), n)


def _random_actions(seed, n=N_ENVS, modules=None):
    rng = np.random.default_rng(seed)
    module = rng.integers(0, P.N_MODULES, n) if modules is None else np.asarray(modules)
    return E.Action(module=jnp.asarray(module, jnp.int32),
                    delta=jnp.asarray(rng.uniform(-1, 1, (n, P.N_PARAMS)), jnp.float32))


def _rollout(params, seed, n_steps):
    key = jax.random.key(seed)
    key, k = jax.random.split(key)
    obs, state = RESET(jax.random.split(k, N_ENVS), params)
    out = []
    for t in range(n_steps):
        key, k_act, k_step = jax.random.split(key, 3)
        module = jax.random.randint(k_act, (N_ENVS,), 0, P.N_MODULES)
        delta = jax.random.uniform(jax.random.fold_in(k_act, 1), (N_ENVS, P.N_PARAMS), minval=-1, maxval=1)
        obs, state, r, term, trunc, info = STEP(jax.random.split(k_step, N_ENVS), state,
                                                E.Action(module, delta), params)
        out.append((obs, state, r, term, trunc, info))
    return out


def test_reset_and_step_shapes_dtypes_vmapped(params):
    obs, state = RESET(_keys(0), params)
    F, M = CFG.num_frames, CFG.n_mels
    assert ENV.obs_shapes["current_log_mel"] == (F, M)
    for name, shape in ENV.obs_shapes.items():
        assert getattr(obs, name).shape == (N_ENVS,) + shape
    assert obs.module_mask.dtype == jnp.bool_ and obs.params01.dtype == jnp.float32
    flat = E.flatten_obs(obs)
    assert flat.shape == (N_ENVS, ENV.observation_size) and flat.dtype == jnp.float32
    assert ENV.observation_size == 3 * F * M + P.N_PARAMS + P.N_MODULES
    assert E.SynthMatchEnv().observation_size == 3 * 44 * 64 + 33 + 9  # default config: 8,490
    assert state.target_index.dtype == jnp.int32 and state.step.dtype == jnp.int32
    assert np.all(np.asarray(state.target_index) < CFG.bank_size)  # stage 0 targets
    obs2, state2, r, term, trunc, info = STEP(_keys(1), state, _random_actions(0), params)
    assert r.shape == (N_ENVS,) and r.dtype == jnp.float32
    assert term.shape == trunc.shape == (N_ENVS,) and term.dtype == trunc.dtype == jnp.bool_
    assert jax.tree.map(jnp.shape, obs2) == jax.tree.map(jnp.shape, obs)
    assert jax.tree.map(lambda x: x.dtype, state2) == jax.tree.map(lambda x: x.dtype, state)
    for name in ("next_params01", "next_log_mel", "target_index", "loss", "best_loss",
                 "applied_delta", "action_lambda", "edit_allowed"):
        assert info[name].shape[0] == N_ENVS
    assert np.all(np.isfinite(np.asarray(flat))) and np.all(np.isfinite(np.asarray(r)))


def test_step_has_no_host_callbacks(params):
    obs, state = ENV.reset(jax.random.key(0), params)
    action = E.Action(jnp.int32(4), jnp.zeros(P.N_PARAMS))
    jaxpr = str(jax.make_jaxpr(ENV.step)(jax.random.key(1), state, action, params))
    for prim in ("callback", "debug_print", "host"):
        assert prim not in jaxpr


def test_locked_modules_never_change_clip_and_snap(params):
    """Random actions (any module index, even invalid, huge/NaN deltas) over a whole episode
    and an auto-reset: locked parameters stay at their defaults bit for bit, everything stays
    in [0, 1] and discrete parameters stay on their grid."""
    obs, state = RESET(_keys(2), params)
    locked = ~np.asarray(P.param_mask(C.stage_module_masks()[0]))
    rng = np.random.default_rng(5)
    for t in range(CFG.max_steps + 1):
        delta = rng.uniform(-3, 3, (N_ENVS, P.N_PARAMS)).astype(np.float32)
        delta[0, :] = np.nan
        delta[1, ::2] = np.inf
        module = rng.integers(-3, P.N_MODULES + 3, N_ENVS)
        obs, state, r, term, trunc, info = STEP(_keys(10 + t), state,
                                                E.Action(jnp.asarray(module, jnp.int32), jnp.asarray(delta)), params)
        for p in (np.asarray(info["next_params01"]), np.asarray(state.params01)):
            np.testing.assert_array_equal(p[:, locked], np.broadcast_to(P.DEFAULT_PARAMS01[locked], p[:, locked].shape))
            assert np.all((p >= 0) & (p <= 1))
            np.testing.assert_array_equal(p, np.asarray(P.snap(p)))
        allowed = np.asarray(info["edit_allowed"])
        expect = np.array([0 <= m < P.N_MODULES and C.stage_module_masks()[0][m] for m in module])
        np.testing.assert_array_equal(allowed, expect)


def test_apply_action_only_touches_the_chosen_module():
    """Direct, cheap check over many random actions and every stage (no rendering)."""
    rng = np.random.default_rng(0)
    n = 700
    p0 = jnp.asarray(rng.uniform(0, 1, (n, P.N_PARAMS)), jnp.float32)
    p0 = P.snap(p0)
    module = jnp.asarray(rng.integers(-2, P.N_MODULES + 2, n), jnp.int32)
    delta = jnp.asarray(rng.uniform(-1, 1, (n, P.N_PARAMS)), jnp.float32)
    md = jnp.asarray(E.default_max_delta())
    apply = jax.jit(jax.vmap(E.apply_action, in_axes=(0, 0, None, None)))
    for stage in range(C.N_STAGES):
        new, applied, allowed = apply(p0, E.Action(module, delta), jnp.int32(stage), md)
        new, p0n, m = np.asarray(new), np.asarray(p0), np.asarray(module)
        unlocked_mod = C.stage_module_masks()[stage]
        for i in range(0, n, 7):
            editable = (0 <= m[i] < P.N_MODULES) and unlocked_mod[m[i]]
            touch = P.MODULE_PARAMS[m[i]] if editable else np.zeros(P.N_PARAMS, bool)
            np.testing.assert_array_equal(new[i, ~touch], p0n[i, ~touch])
            assert bool(allowed[i]) == editable
        np.testing.assert_allclose(np.asarray(applied), new - p0n, atol=0)
        assert np.all((new >= 0) & (new <= 1))
    # "latent" discrete mode keeps small steps on discrete params (they accumulate)
    i = P.INDEX["filter.type"]
    small = jnp.zeros(P.N_PARAMS).at[i].set(0.1)
    act = E.Action(jnp.int32(P.MODULES.index("filter")), small)
    start = jnp.asarray(P.DEFAULT_PARAMS01)
    snapped, _, _ = E.apply_action(start, act, jnp.int32(0), md, "snap")
    latent, _, _ = E.apply_action(start, act, jnp.int32(0), md, "latent")
    assert float(snapped[i]) == float(start[i])  # 0.05 < half a choice step: snapped back
    assert float(latent[i]) == pytest.approx(float(start[i]) + 0.1 * float(md[i]))
    # a full delta reaches the next filter type under snapping (max_delta >= one choice step)
    full, _, _ = E.apply_action(start, E.Action(act.module, small.at[i].set(1.0)), jnp.int32(0), md)
    assert float(full[i]) == pytest.approx(float(start[i]) + 0.5)


def test_reward_terms_add_up(params):
    obs, state = RESET(_keys(3), params)
    _, _, r, _, _, info = STEP(_keys(4), state, _random_actions(1), params)
    terms = info["reward_terms"]
    parts = sum(np.asarray(getattr(terms, f), np.float64) for f in terms._fields if f != "total")
    np.testing.assert_allclose(np.asarray(r), np.asarray(terms.total))
    np.testing.assert_allclose(parts, np.asarray(r), rtol=1e-6, atol=1e-6)
    lt = info["loss_terms"]
    np.testing.assert_allclose(np.asarray(info["loss"]), np.asarray(lt.total), rtol=1e-6)
    # improvement is measured against the reset loss
    np.testing.assert_allclose(np.asarray(terms.improvement),
                               np.asarray(state.loss) - np.asarray(info["loss"]), rtol=1e-5, atol=1e-5)


def test_moving_to_the_target_beats_random_actions(bank):
    """Two edits from the defaults: amp_env to the target, then the filter to the target.
    The second lands exactly on the target preset: its reward beats 64 random edits from the
    same state, and the loss reaches ~0 (targets and steps share the render key)."""
    params = ENV.make_params(bank, stage=0, max_delta=1.0)
    obs, state = RESET(_keys(5), params)
    target = np.asarray(bank.params01.reshape(-1, P.N_PARAMS))[np.asarray(state.target_index)]

    def to_target(module_name):
        d = (target - np.asarray(state.params01)) * P.MODULE_PARAMS[P.MODULES.index(module_name)]
        return E.Action(jnp.full(N_ENVS, P.MODULES.index(module_name), jnp.int32), jnp.asarray(d, jnp.float32))

    _, state, *_ = STEP(_keys(6), state, to_target("amp_env"), params)
    good = STEP(_keys(7), state, to_target("filter"), params)
    np.testing.assert_allclose(np.asarray(good[5]["next_params01"]), target, atol=1e-6)
    assert np.all(np.asarray(good[5]["loss"]) < 1e-3)
    best_random = np.full(N_ENVS, -np.inf)
    for seed in range(64 // N_ENVS + 1):
        rng = np.random.default_rng(100 + seed)
        act = _random_actions(100 + seed, modules=rng.choice([P.MODULES.index("filter"), P.MODULES.index("amp_env")], N_ENVS))
        best_random = np.maximum(best_random, np.asarray(STEP(_keys(8), state, act, params)[2]))
    assert np.all(np.asarray(good[2]) > best_random)


def test_noop_gets_about_zero_improvement(params):
    obs, state = RESET(_keys(9), params)
    zero = E.Action(jnp.full(N_ENVS, P.MODULES.index("filter"), jnp.int32), jnp.zeros((N_ENVS, P.N_PARAMS)))
    locked = E.Action(jnp.full(N_ENVS, P.MODULES.index("lfo"), jnp.int32),
                      jnp.ones((N_ENVS, P.N_PARAMS)))  # lfo is locked at stage 0
    for act in (zero, locked):
        _, s2, r, _, _, info = STEP(_keys(10), state, act, params)
        imp = np.asarray(info["reward_terms"].improvement)
        assert np.all(np.abs(imp) <= 1e-4 * np.maximum(np.asarray(state.loss), 1.0))
        np.testing.assert_array_equal(np.asarray(info["applied_delta"]), 0.0)
        np.testing.assert_array_equal(np.asarray(info["reward_terms"].action), 0.0)
        np.testing.assert_array_equal(np.asarray(s2.params01), np.asarray(state.params01))


def test_same_seed_same_trajectory_different_seeds_differ(params):
    n = CFG.max_steps + 2  # crosses an auto-reset
    a, b, c = _rollout(params, 11, n), _rollout(params, 11, n), _rollout(params, 12, n)
    for x, y in zip(a, b):
        jax.tree.map(lambda u, v: np.testing.assert_array_equal(np.asarray(u), np.asarray(v)), x, y)
    ra = np.stack([np.asarray(t[2]) for t in a])
    rc = np.stack([np.asarray(t[2]) for t in c])
    assert not np.array_equal(ra, rc)
    params_a = np.stack([np.asarray(t[1].params01) for t in a])
    params_c = np.stack([np.asarray(t[1].params01) for t in c])
    assert not np.array_equal(params_a, params_c)


def test_truncation_and_auto_reset(params):
    obs, state = RESET(_keys(13), params)
    for t in range(CFG.max_steps):
        obs, state, r, term, trunc, info = STEP(_keys(20 + t), state, _random_actions(t), params)
        assert np.all(np.asarray(trunc)) == (t == CFG.max_steps - 1)
        assert not np.any(np.asarray(term))  # success_loss = 0 disables termination
    # after the time limit: a fresh episode from the (default) start preset, pre-reset data in info
    np.testing.assert_array_equal(np.asarray(state.step), 0)
    np.testing.assert_array_equal(np.asarray(state.params01),
                                  np.broadcast_to(np.asarray(params.bank.start_params01[0, 0]), (N_ENVS, P.N_PARAMS)))
    assert not np.array_equal(np.asarray(info["next_params01"]), np.asarray(state.params01))
    np.testing.assert_allclose(np.asarray(state.loss), np.asarray(state.best_loss))
    # obs_from rebuilds the pre-reset observation from what a replay buffer stores
    rebuilt = jax.vmap(ENV.obs_from, in_axes=(0, 0, 0, None))(info["next_log_mel"], info["next_params01"],
                                                             info["target_index"], params)
    np.testing.assert_array_equal(np.asarray(rebuilt.params01), np.asarray(info["next_params01"]))
    np.testing.assert_allclose(np.asarray(rebuilt.delta_log_mel),
                               np.asarray(rebuilt.current_log_mel - rebuilt.target_log_mel))


def test_success_terminates(params):
    obs, state = RESET(_keys(14), params)
    p = params.replace(success_loss=jnp.float32(1e9))
    _, s2, _, term, trunc, info = STEP(_keys(15), state, _random_actions(2), p)
    assert np.all(np.asarray(term)) and not np.any(np.asarray(trunc))
    np.testing.assert_array_equal(np.asarray(s2.step), 0)


def test_adaptive_lambda(params):
    """lambda_eff = lambda * stage_scale[stage] * ((1 - w) + w * progress); the reward's
    action term is -lambda_eff * ||applied delta||^2."""
    obs, state = RESET(_keys(16), params)
    p = params.replace(action_lambda=jnp.float32(0.5), lambda_progress_weight=jnp.float32(1.0),
                       lambda_stage_scale=jnp.asarray([2.0, 1.0, 1.0, 1.0], jnp.float32))
    # at reset best == initial: progress 0, so with w = 1 large edits are free
    s = jax.tree.map(lambda x: x[0], state)
    assert float(E.effective_lambda(s, p)) == 0.0
    assert float(E.effective_lambda(s.replace(best_loss=s.initial_loss * 0.25), p)) == pytest.approx(0.5 * 2 * 0.75)
    assert float(E.effective_lambda(s, p.replace(lambda_progress_weight=jnp.float32(0.0)))) == pytest.approx(1.0)
    state = state.replace(best_loss=state.initial_loss * 0.5)
    _, _, _, _, _, info = STEP(_keys(17), state, _random_actions(3, modules=[4] * N_ENVS), p)
    lam = np.asarray(info["action_lambda"])
    np.testing.assert_allclose(lam, 0.5 * 2.0 * 0.5, rtol=1e-6)
    sq = np.sum(np.asarray(info["applied_delta"], np.float64) ** 2, axis=-1)
    np.testing.assert_allclose(np.asarray(info["reward_terms"].action), -lam * sq, rtol=1e-5)
    assert np.all(sq > 0)


def test_reset_to_a_given_target(params):
    p = params.replace(stage=jnp.int32(1))
    obs, state = jax.jit(ENV.reset_to)(jnp.int32(3), jnp.int32(0), p)
    assert int(state.target_index) == 1 * CFG.bank_size + 3
    np.testing.assert_array_equal(np.asarray(obs.target_log_mel), np.asarray(params.bank.log_mel[1, 3]))
    assert float(state.loss) == float(params.bank.start_loss[1, 0, 3])


def test_stage_switch_needs_no_recompile(params):
    obs, state = RESET(_keys(18), params)
    # warm-up at stage 0: the one trace of these shapes (none when an earlier test made it), so
    # the test means the same whatever ran before it
    jax.block_until_ready(STEP(_keys(19), state, _random_actions(4), params))
    TRACES.clear()
    for stage in range(C.N_STAGES):
        p = params.replace(stage=jnp.int32(stage))
        _, s2, _, _, _, info = STEP(_keys(19), state, _random_actions(4), p)
        jax.block_until_ready(s2)
    assert len(TRACES) == 0  # the stage is data, not a static argument: no retrace
    # a reset at stage 2 draws stage-2 targets and shows the stage-2 mask
    obs, state = RESET(_keys(18), params.replace(stage=jnp.int32(2)))
    idx = np.asarray(state.target_index)
    assert np.all((idx >= 2 * CFG.bank_size) & (idx < 3 * CFG.bank_size))
    np.testing.assert_array_equal(np.asarray(obs.module_mask),
                                  np.broadcast_to(C.stage_module_masks()[2], (N_ENVS, P.N_MODULES)))


def test_bad_actions(params):
    obs, state = RESET(_keys(21), params)
    f = P.MODULES.index("filter")
    delta = np.asarray(_random_actions(5).delta)
    nan_delta = delta.copy()
    nan_delta[:, P.MODULE_PARAMS[f]] = np.nan
    zero_delta = delta.copy()
    zero_delta[:, P.MODULE_PARAMS[f]] = 0.0
    mod = jnp.full(N_ENVS, f, jnp.int32)
    a = STEP(_keys(22), state, E.Action(mod, jnp.asarray(nan_delta)), params)
    b = STEP(_keys(22), state, E.Action(mod, jnp.asarray(zero_delta)), params)
    jax.tree.map(lambda u, v: np.testing.assert_array_equal(np.asarray(u), np.asarray(v)), a, b)
    # out-of-range module index: no edit, flagged in info
    for m in (-1, P.N_MODULES, 1000):
        out = STEP(_keys(22), state, E.Action(jnp.full(N_ENVS, m, jnp.int32), jnp.ones((N_ENVS, P.N_PARAMS))), params)
        np.testing.assert_array_equal(np.asarray(out[5]["next_params01"]), np.asarray(state.params01))
        assert not np.any(np.asarray(out[5]["edit_allowed"]))
    # wrong shapes: a clear error at trace time ...
    with pytest.raises(E.ActionError, match="delta shape"):
        ENV.step(jax.random.key(0), jax.tree.map(lambda x: x[0], state),
                 E.Action(jnp.int32(0), jnp.zeros(P.N_PARAMS - 1)), params)
    with pytest.raises(E.ActionError, match="vmap"):
        ENV.step(jax.random.key(0), jax.tree.map(lambda x: x[0], state),
                 E.Action(jnp.zeros(2, jnp.int32), jnp.zeros((2, P.N_PARAMS))), params)
    # ... and the strict host-side validator
    good = E.Action(np.int32(3), np.zeros(P.N_PARAMS, np.float32))
    assert isinstance(E.check_action(good), E.Action)
    E.check_action(E.Action(np.zeros(4, np.int32), np.zeros((4, P.N_PARAMS), np.float32)), (4,))
    cases = [
        (E.Action(np.int32(3), np.zeros(P.N_PARAMS + 1, np.float32)), "delta must have shape"),
        (E.Action(np.zeros(2, np.int32), np.zeros(P.N_PARAMS, np.float32)), "module must have shape"),
        (E.Action(np.float32(3.0), np.zeros(P.N_PARAMS, np.float32)), "integer"),
        (E.Action(np.int32(P.N_MODULES), np.zeros(P.N_PARAMS, np.float32)), r"in \[0, 8\]"),
        (E.Action(np.int32(0), np.full(P.N_PARAMS, np.nan, np.float32)), "NaN"),
        (E.Action(np.int32(0), np.full(P.N_PARAMS, 1.5, np.float32)), r"\[-1, 1\]"),
        ((0, np.zeros(P.N_PARAMS)), "Action"),
    ]
    for action, message in cases:
        with pytest.raises(E.ActionError, match=message):
            E.check_action(action)


def test_make_params_and_config_validation(bank):
    with pytest.raises(ValueError, match="stage"):
        ENV.make_params(bank, stage=C.N_STAGES)
    with pytest.raises(ValueError, match="action_lambda"):
        ENV.make_params(bank, action_lambda=-1.0)
    with pytest.raises(ValueError, match="lambda_progress_weight"):
        ENV.make_params(bank, lambda_progress_weight=2.0)
    with pytest.raises(ValueError, match="bank shapes"):
        E.SynthMatchEnv().make_params(bank)
    with pytest.raises(ValueError, match="init"):
        E.small_config(init="randm")
    with pytest.raises(ValueError, match="duration_s"):
        E.EnvConfig(synth=SynthConfig(duration_s=0.25))


@pytest.mark.slow  # small_config repeat of tests/agents/test_rendering.py (tiny config, in CI)
def test_render_features_batches_under_nested_vmap(params):
    """The custom vmap rule flattens vmap-over-seeds of vmap-over-envs into one batch and
    agrees with the single-sound path."""
    fn = env_render_features(CFG.synth, CFG.features, CFG.note, CFG.velocity, return_audio=True)
    x = jnp.asarray(C.training_presets(jax.random.key(9), 3, 6)).reshape(2, 3, P.N_PARAMS)
    key = params.bank.render_key
    nested, nested_audio = jax.jit(jax.vmap(jax.vmap(fn, in_axes=(0, None)), in_axes=(0, None)))(x, key)
    single, single_audio = fn(x[1, 2], key)
    assert nested.log_mel.shape == (2, 3, CFG.num_frames, CFG.n_mels)
    # a batch of 6 vs one sound: two programs, within the synth's batch-invariance bound (5e-4,
    # derived in tests/jaxsynth/test_synth.py::test_a_sound_alone_equals_it_inside_a_batch)
    np.testing.assert_allclose(np.asarray(nested_audio[1, 2]), np.asarray(single_audio), rtol=0, atol=5e-4)


def test_step_with_the_loss_in_analysis_chunks_equals_the_unchunked_step(bank):
    """The env step computes the matching loss inside the analysis' chunk loop, gathering the
    targets per chunk (``rendering.env_render_loss``). 6 envs in chunks of 4 (the last padded)
    vs the same step with the whole batch in one pass, and vs the unfused reference: the
    features of the rendered presets (``render_analyze``) and ``matching_loss`` against the
    bank's cached features of each env's own target. The analysis is compiled for 4 clips vs 6,
    so terms agree to float32 rounding amplified by the logs of the spectral terms (the bounds
    of tests/jaxsynth/test_features.py::test_chunked_analysis_equals_one_pass); a wrong target
    or row would differ by O(0.1-1)."""
    import dataclasses

    from agents.rendering import render_analyze_jit
    from jaxsynth.losses import matching_loss
    steps = {}
    for chunk in (4, None):
        features = dataclasses.replace(CFG.features, batch_chunk=chunk)
        env = E.SynthMatchEnv(dataclasses.replace(CFG, features=features))
        p = env.make_params(bank, stage=1)
        _, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(_keys(21), p)
        steps[chunk] = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))(
            _keys(22), state, _random_actions(5), p)
    (obs_c, st_c, r_c, _, _, info_c), (obs_1, st_1, r_1, _, _, info_1) = steps[4], steps[None]
    # the edit does not depend on the analysis' chunking; two compiled programs may contract a
    # multiply-add differently (<= 1 float32 ulp, ~6e-8 below 1), a wrong edit moves >= 1e-3
    np.testing.assert_allclose(np.asarray(info_c["next_params01"]),
                               np.asarray(info_1["next_params01"]), rtol=0, atol=1e-6)
    for got, want in zip(info_c["loss_terms"], info_1["loss_terms"]):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(r_c), np.asarray(r_1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(st_c.current_log_mel), np.asarray(st_1.current_log_mel),
                               rtol=1e-4, atol=1e-3)
    _, feats = render_analyze_jit(info_c["next_params01"], bank.render_key, CFG.synth, CFG.features,
                                  CFG.note, CFG.velocity)
    index = np.asarray(info_c["target_index"])
    targets = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:])[index], bank.features)
    want = matching_loss(feats, targets, CFG.loss_weights)
    np.testing.assert_allclose(np.asarray(info_c["loss_terms"].total), np.asarray(want.total),
                               rtol=1e-4, atol=1e-5)
    assert len(set(index.tolist())) > 1  # envs with different targets
