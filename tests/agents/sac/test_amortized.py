"""agents/sac/amortized.py: the amortized first guess. The fresh-pair stream never yields a
held-out preset; the parameter loss is 0 for the true preset, invariant to swapping the
oscillators and blind to silent parameters; training on a fixed batch lowers the loss by a
margin that holds for every seed tried; a saved network loads back bit for bit and every
broken run directory gives a clear error."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents import curriculum as C
from agents.sac import amortized as A
from jaxsynth import params as P

TINY = A.AmortizedConfig(duration_s=0.1, batch_size=8, encoder_width=16, hidden=(32,), val_size=4,
                         steps=2, chunk_steps=1)


def _presets(n=64, seed=0):
    return jnp.asarray(C.training_presets(jax.random.key(seed), C.N_STAGES - 1, n))


def test_fresh_presets_never_heldout_and_cover_all_stages():
    draw = jax.jit(lambda k: A.fresh_presets(k, A.AmortizedConfig(), 4096))
    xs = np.concatenate([np.asarray(draw(jax.random.key(s))) for s in range(8)])
    assert not C.is_heldout(xs).any()
    assert ((xs >= 0) & (xs <= 1)).all()
    np.testing.assert_array_equal(xs, np.asarray(P.snap(xs)))
    # presets of stage 0 (osc2 silent, all stage-3 modules at their defaults) and of stage 3 both occur
    osc2 = P.INDEX["osc2.level"]
    assert (xs[:, osc2] == P.DEFAULT_PARAMS01[osc2]).mean() > 0.3
    assert (xs[:, osc2] != P.DEFAULT_PARAMS01[osc2]).mean() > 0.3
    # the held-out presets of the harness are never drawn (none equal, all in the other partition half)
    held = np.concatenate([C.heldout_presets(0, s, 8) for s in range(C.N_STAGES)])
    assert C.is_heldout(held).all()
    assert not (xs[:, None, :] == held[None]).all(-1).any()


def test_param_loss_zero_for_truth_and_swap_invariant():
    y = _presets()
    zero = A.param_loss(y, A.one_hot_logits(y), y)
    np.testing.assert_array_equal(np.asarray(zero), 0.0)
    swapped = A.swap_oscillators(y)
    # a guess that is the oscillator-swapped truth is perfect too
    np.testing.assert_array_equal(np.asarray(A.param_loss(swapped, A.one_hot_logits(swapped), y)), 0.0)
    key = jax.random.key(3)
    cont = jax.random.uniform(key, y.shape)
    logits = jax.random.normal(jax.random.fold_in(key, 1), (y.shape[0], A.N_LOGITS))
    base = A.param_loss(cont, logits, y)
    assert (np.asarray(base) > 0).all()
    np.testing.assert_allclose(np.asarray(A.param_loss(cont, logits, swapped)), np.asarray(base), rtol=1e-6)
    assert A.swap_oscillators(swapped).tolist() == y.tolist()


def test_snapped_head_regresses_and_snaps_the_discrete_parameters():
    """The ablation head ("snapped"): discrete parameters come from the continuous output,
    snapped to the nearest choice (the logits are ignored), and the loss is the weighted L1 of
    every parameter, 0 for the truth and its oscillator-swapped twin."""
    y = _presets()
    junk = jax.random.normal(jax.random.key(5), (y.shape[0], A.N_LOGITS))
    np.testing.assert_array_equal(np.asarray(A.param_loss(y, junk, y, head="snapped")), 0.0)
    np.testing.assert_array_equal(np.asarray(A.param_loss(A.swap_oscillators(y), junk, y, head="snapped")), 0.0)
    coarse = P.INDEX["osc1.coarse_st"]
    n = len(P.SPECS[coarse].choices)
    near = y.at[:, coarse].add(0.4 / (n - 1))  # under half a step from the true choice
    np.testing.assert_array_equal(np.asarray(A.to_params01(near, junk, "snapped"))[:, coarse],
                                  np.asarray(y)[:, coarse])
    # the categorical head reads the logits instead, so it does not return the truth here
    assert not np.array_equal(np.asarray(A.to_params01(y, junk))[:, coarse], np.asarray(y)[:, coarse])
    moved = y.at[:, P.INDEX["filter.cutoff_hz"]].add(0.1)
    assert (np.asarray(A.param_loss(moved, junk, y, head="snapped")) > 0).all()
    with pytest.raises(ValueError, match="discrete_head"):
        A.AmortizedConfig(discrete_head="softmax")


def test_param_loss_ignores_silent_parameters():
    y = _presets(16)
    y = y.at[:, P.INDEX["osc2.level"]].set(0.0).at[:, P.INDEX["filter.env_amount_oct"]].set(0.5)
    y = y.at[:, [P.INDEX[n] for n in ("lfo.to_pitch_st", "lfo.to_cutoff_oct", "lfo.to_amp")]].set(0.0)
    y = y.at[:, P.INDEX["unison.voices"]].set(0.0)
    silent = ["osc2.shape", "osc2.pulse_width", "osc2.fine_cents", "filter_env.attack_s", "filter_env.decay_s",
              "filter_env.sustain", "filter_env.release_s", "lfo.rate_hz", "unison.detune_cents",
              "filter.key_track"]
    moved = y.at[:, [P.INDEX[n] for n in silent]].set(1.0 - y[:, [P.INDEX[n] for n in silent]])
    for n in ("osc2.coarse_st", "lfo.shape"):
        moved = moved.at[:, P.INDEX[n]].set(1.0 - P.snap(moved)[:, P.INDEX[n]])
    moved = P.snap(moved)
    np.testing.assert_array_equal(np.asarray(A.param_loss(moved, A.one_hot_logits(moved), y)), 0.0)
    audible = y.at[:, P.INDEX["filter.cutoff_hz"]].add(0.1)
    assert (np.asarray(A.param_loss(audible, A.one_hot_logits(audible), y)) > 0).all()


def test_loss_falls_on_fixed_batch_for_ten_seeds():
    cfg = TINY
    true01, log_mel, scalars, _ = jax.jit(lambda k: A.fresh_pairs(k, cfg, 32))(jax.random.key(0))
    net, opt = cfg.net(), optax.adam(3e-3)

    def loss(p):
        cont, logits = net.apply(p, log_mel, scalars)
        return A.param_loss(cont, logits, true01).mean()

    def fit(key):
        p = net.init(key, log_mel, scalars)
        def step(carry, _):
            p, s = carry
            g = jax.grad(loss)(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None
        (p1, _), _ = jax.lax.scan(step, (p, opt.init(p)), None, length=60)
        return loss(p), loss(p1)

    before, after = jax.jit(jax.vmap(fit))(jax.random.split(jax.random.key(1), 10))
    assert (np.asarray(after) < 0.5 * np.asarray(before)).all(), (before, after)


def _tiny_params(seed=0):
    frames = TINY.input_dim // TINY.features.n_mels
    return TINY.net().init(jax.random.key(seed), jnp.zeros((1, frames, TINY.features.n_mels)),
                           jnp.zeros((1, A.N_SCALARS)))


def test_save_load_bit_identical_and_guess(tmp_path):
    params = _tiny_params()
    A.save_amortized(tmp_path, params, TINY, {"pairs": 0})
    loaded = A.load_amortized(tmp_path)
    assert loaded.config == TINY
    same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)) and a.dtype == b.dtype,
                        params, loaded.net_params)
    assert jax.tree.all(same) and jax.tree.structure(params) == jax.tree.structure(loaded.net_params)
    frames = TINY.input_dim // TINY.features.n_mels
    lm = jax.random.normal(jax.random.key(2), (5, frames, TINY.features.n_mels)) * 20 - 40
    g = jax.jit(A.guess_params01, static_argnums=0)(TINY.net(), loaded.net_params, lm, jnp.zeros((5, 3)))
    assert g.shape == (5, P.N_PARAMS) and ((g >= 0) & (g <= 1)).all()
    np.testing.assert_array_equal(np.asarray(g), np.asarray(P.snap(g)))


def test_bad_run_directory_errors(tmp_path):
    with pytest.raises(A.AmortizedLoadError, match="does not exist"):
        A.load_amortized(tmp_path / "nope")
    with pytest.raises(A.AmortizedLoadError, match="missing"):
        A.load_amortized(tmp_path)
    A.save_amortized(tmp_path, _tiny_params(), TINY, {})
    blob = (tmp_path / A.PARAMS_FILE).read_bytes()
    (tmp_path / A.PARAMS_FILE).write_bytes(blob[:-7])
    with pytest.raises(A.AmortizedLoadError, match="SHA-256"):
        A.load_amortized(tmp_path)
    (tmp_path / A.PARAMS_FILE).write_bytes(blob)
    meta = json.loads((tmp_path / A.META_FILE).read_text())
    (tmp_path / A.META_FILE).write_text("{not json")
    with pytest.raises(A.AmortizedLoadError, match="JSON"):
        A.load_amortized(tmp_path)
    (tmp_path / A.META_FILE).write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(A.AmortizedLoadError, match="format"):
        A.load_amortized(tmp_path)
    # a network of another size under the right hash: shapes are checked
    other = A.AmortizedConfig(**{**meta["config"], "hidden": [8], "stages": tuple(meta["config"]["stages"])})
    A.save_amortized(tmp_path, _tiny_params(), other, {})
    with pytest.raises(A.AmortizedLoadError, match="this network|shapes"):
        A.load_amortized(tmp_path)
    assert not [f for f in os.listdir(tmp_path) if f not in (A.PARAMS_FILE, A.META_FILE)]


def test_registry_matchers_from_run_directory(tmp_path):
    from agents.evaluation.registry import build_matchers
    from agents.search.common import MatchConfig, render_features, target_features_of_params
    from agents.search.pitch_first import PitchFirstConfig
    from jaxsynth.synth import SynthConfig

    A.save_amortized(tmp_path, _tiny_params(), TINY, {})
    matchers = build_matchers(str(tmp_path))
    cfg = MatchConfig(synth=SynthConfig(duration_s=TINY.duration_s))
    x = C.heldout_presets(0, 0, 2)
    audio, feats = jax.jit(render_features, static_argnums=1)(jnp.asarray(x), cfg)
    mask = C.stage_module_masks()[0]
    res = matchers["amortized"](jax.random.key(0), feats, mask, 32, cfg, target_audio=audio)
    assert int(res.trace_renders[-1]) == 1
    locked = ~np.asarray(P.param_mask(mask))
    np.testing.assert_array_equal(np.asarray(res.best_params01)[:, locked],
                                  np.broadcast_to(P.DEFAULT_PARAMS01[locked], (2, locked.sum())))
    both = matchers["amortized+cmaes"](jax.random.key(0), feats, mask, 24, cfg, target_audio=audio)
    assert int(both.trace_renders[0]) == 1 and int(both.trace_renders[-1]) <= 24
    assert (np.asarray(both.best_loss) <= np.asarray(res.best_loss)).all()
    level = matchers["amortized+level"](jax.random.key(0), feats, mask, 8, cfg, target_audio=audio)
    assert int(level.trace_renders[-1]) == 3 + len(PitchFirstConfig().pitched_scales)  # guess, copies, final
    assert (np.asarray(level.best_loss) <= np.asarray(res.best_loss)).all()
    gain = matchers["amortized+gain+cmaes"](jax.random.key(0), feats, mask, 24, cfg, target_audio=audio)
    assert list(gain.trace_renders[:2]) == [1, 3] and int(gain.trace_renders[-1]) <= 24
    assert (np.asarray(gain.best_loss) <= np.asarray(res.best_loss)).all()
    with pytest.raises(ValueError, match="amortized network was trained"):
        matchers["amortized"](jax.random.key(0), target_features_of_params(x, MatchConfig()), mask, 8,
                              MatchConfig(), target_audio=np.zeros((2, MatchConfig().synth.num_samples)))
    with pytest.raises(ValueError, match="sac_train"):
        matchers["sac"]


def test_train_is_pure_and_seeded():
    cfg = dataclasses.replace(TINY, batch_size=4, steps=2)
    train = jax.jit(A.make_train_amortized(cfg))
    s1, m1 = train(jax.random.key(0))
    s2, m2 = train(jax.random.key(0))
    s3, _ = train(jax.random.key(1))
    assert m1.loss.shape == (2,) and np.isfinite(np.asarray(m1.loss)).all()
    assert jax.tree.all(jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
                                     s1.net_params, s2.net_params))
    assert not np.array_equal(np.asarray(s1.net_params["params"]["continuous"]["kernel"]),
                              np.asarray(s3.net_params["params"]["continuous"]["kernel"]))


def test_cosine_schedule_halves_the_second_step():
    """With ``lr_schedule="cosine"`` over 2 steps the learning rate is lr at step 0 and lr/2 at
    step 1; Adam's update is proportional to it, so the second update of the cosine run is half
    the constant run's (same key, same batches). Both runs are the same arithmetic up to the
    scalar learning rate: the bound (1e-3 relative) is far above float32 rounding (~1e-6) and far
    below what a missing schedule (ratio 1) or a wrong one would give."""
    def second_update(schedule):
        init, run = A.make_amortized_steps(dataclasses.replace(TINY, lr_schedule=schedule))
        step = jax.jit(run, static_argnums=1)
        s1, _ = step(init(jax.random.key(0)), 1)
        s2, _ = step(s1, 1)
        k1 = np.asarray(s1.net_params["params"]["continuous"]["kernel"])
        k2 = np.asarray(s2.net_params["params"]["continuous"]["kernel"])
        return k2 - k1
    const, cosine = second_update("constant"), second_update("cosine")
    ratio = np.linalg.norm(cosine) / np.linalg.norm(const)
    assert abs(ratio - 0.5) < 1e-3, ratio
    with pytest.raises(ValueError, match="lr_schedule"):
        A.AmortizedConfig(lr_schedule="linear")


def test_discrete_heads_benchmark_scores_choices_with_the_oscillators_swapped():
    """benchmarks/discrete_heads.py's scoring: a guess that is the truth with its oscillators
    swapped gets every audible discrete choice right; a coarse tune moved by an octave is
    counted as wrong and as an octave error; silent parameters are not counted."""
    from benchmarks import discrete_heads as D

    y = np.array(P.snap(_presets(32)))
    y[:, P.INDEX["osc1.level"]] = 0.9  # osc1 audible in every preset
    loss = np.zeros(len(y))
    s = D.scores(np.asarray(A.swap_oscillators(jnp.asarray(y))), y, loss, 60.0)
    for name in ("osc1.coarse_st", "osc2.coarse_st", "unison.voices", "filter.type", "lfo.shape"):
        right, heard = s[f"{name} exact"]
        assert right == heard, (name, s)
    assert s["osc1.coarse_st octave off"][0] == 0
    i = P.INDEX["osc1.coarse_st"]
    n = len(P.SPECS[i].choices)
    low = y[:, i] * (n - 1) >= 12  # room for an octave down
    moved = y.copy()
    moved[low, i] -= 12 / (n - 1)
    s = D.scores(moved, y, loss, 60.0)
    assert s["osc1.coarse_st exact"][0] == 32 - low.sum()
    assert s["osc1.coarse_st octave off"][0] == low.sum() > 0
