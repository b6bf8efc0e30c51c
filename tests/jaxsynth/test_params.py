"""Tests for jaxsynth/params.py.

References: each curve's closed form evaluated in float64 NumPy (linear, log = geometric
interpolation, exp = power curve), the choice grid k / (n - 1), scipy.stats.kstest for the
uniformity of sampled presets, and the json module for the preset files.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxsynth import params as P
from jaxsynth.params import PresetError

CONTINUOUS = [i for i, s in enumerate(P.SPECS) if not s.discrete]
DISCRETE = [i for i, s in enumerate(P.SPECS) if s.discrete]
# One batch shape for every array test: eager jnp ops compile once per shape, and on a loaded
# 2-core machine a handful of extra shapes costs seconds.
ROWS = 512


def reference_denormalize(u: np.ndarray) -> np.ndarray:
    """Physical values from the documented curves, float64, continuous parameters only."""
    out = np.empty_like(u, dtype=np.float64)
    for i, s in enumerate(P.SPECS):
        if s.curve == "log":
            out[..., i] = s.low * (s.high / s.low) ** u[..., i]
        elif s.curve == "exp":
            out[..., i] = s.low + (s.high - s.low) * u[..., i] ** s.exponent
        else:
            out[..., i] = s.low + (s.high - s.low) * u[..., i]
    return out


def test_table_is_consistent():
    assert P.N_PARAMS == len(P.NAMES) == len(set(P.NAMES)) == 33
    for s in P.SPECS:
        assert s.low < s.high and s.low <= s.default <= s.high, s.name
        assert s.curve in ("linear", "log", "exp"), s.name
        if s.curve == "log":
            assert s.low > 0, s.name
        assert s.name.startswith(s.module + "."), s.name
    assert set(P.MODULES) == {s.module for s in P.SPECS}
    np.testing.assert_array_equal(P.MODULE_PARAMS.sum(0), 1)  # each param in one module


# ------------------------------------------------------------------ curves and round trips

def test_denormalize_matches_each_curve():
    # float32 vs a float64 reference: relative 2e-6 covers ~10 ulps of exp/pow in float32.
    u = np.random.default_rng(0).uniform(0, 1, (ROWS, P.N_PARAMS))
    got = np.asarray(P.denormalize(jnp.asarray(u, jnp.float32)), np.float64)
    ref = reference_denormalize(u.astype(np.float32).astype(np.float64))
    scale = np.maximum(np.abs(P._LOW), np.abs(P._HIGH)).astype(np.float64)
    for i in CONTINUOUS:
        np.testing.assert_allclose(got[:, i], ref[:, i], rtol=2e-6, atol=2e-6 * scale[i],
                                   err_msg=P.NAMES[i])


@pytest.mark.parametrize("curve", ["linear", "log", "exp"])
def test_normalize_denormalize_round_trip(curve):
    # 2e-5 in [0, 1]: normalize inverts a float32 exp/pow with a float32 log/pow; each costs a
    # few ulps relative to the physical value, which the curve's slope maps back to u.
    idx = [i for i in CONTINUOUS if P.SPECS[i].curve == curve]
    assert idx, f"no {curve} parameter"
    u = np.random.default_rng(1).uniform(0, 1, (ROWS, P.N_PARAMS)).astype(np.float32)
    u[0], u[1] = 0.0, 1.0  # both endpoints of every curve
    back = np.asarray(P.normalize(P.denormalize(jnp.asarray(u))))
    np.testing.assert_allclose(back[:, idx], u[:, idx], atol=2e-5)
    phys = reference_denormalize(u.astype(np.float64))
    again = np.asarray(P.denormalize(P.normalize(jnp.asarray(phys, jnp.float32))))
    for i in idx:
        np.testing.assert_allclose(again[:, i], phys[:, i], rtol=1e-5,
                                   atol=1e-6 * (P.SPECS[i].high - P.SPECS[i].low), err_msg=P.NAMES[i])


def test_discrete_round_trip_on_the_grid():
    u = np.tile(P.DEFAULT_PARAMS01, (ROWS, 1))
    for i in DISCRETE:
        n = len(P.SPECS[i].choices)
        u[:n, i] = np.arange(n) / (n - 1)
    phys = np.asarray(P.denormalize(jnp.asarray(u)))
    back = np.asarray(P.normalize(jnp.asarray(phys)))
    for i in DISCRETE:
        n = len(P.SPECS[i].choices)
        np.testing.assert_allclose(phys[:n, i], np.arange(n), atol=1e-5, err_msg=P.NAMES[i])
        np.testing.assert_allclose(back[:n, i], u[:n, i], atol=1e-6)


def test_log_curve_endpoints_and_geometric_midpoint():
    u = np.zeros((3, P.N_PARAMS), np.float32)
    u[1], u[2] = 0.5, 1.0
    phys = np.asarray(P.denormalize(jnp.asarray(u)), np.float64)
    for i, s in enumerate(P.SPECS):
        if s.curve != "log":
            continue
        np.testing.assert_allclose(phys[:, i], [s.low, np.sqrt(s.low * s.high), s.high],
                                   rtol=2e-6, err_msg=s.name)
    i = P.INDEX["filter.cutoff_hz"]
    np.testing.assert_allclose(phys[1, i], 800.0, rtol=2e-6)  # sqrt(40 * 16000)


def test_defaults_normalize_to_their_physical_values():
    phys = np.asarray(P.denormalize(jnp.asarray(P.DEFAULT_PARAMS01)))
    np.testing.assert_allclose(phys, P.DEFAULT_PHYSICAL, rtol=1e-5, atol=1e-5)
    assert np.all((P.DEFAULT_PARAMS01 >= 0) & (P.DEFAULT_PARAMS01 <= 1))


# ------------------------------------------------------------------ snapping, sanitize

def test_snap_gives_exact_grid_points_and_choice_index():
    rng = np.random.default_rng(2)
    u = rng.uniform(0, 1, (ROWS, P.N_PARAMS)).astype(np.float32)
    s = np.asarray(P.snap(jnp.asarray(u)))
    np.testing.assert_array_equal(s[:, CONTINUOUS], u[:, CONTINUOUS])  # untouched
    for i in DISCRETE:
        n = len(P.SPECS[i].choices)
        k = np.floor(u[:, i].astype(np.float64) * (n - 1) + 0.5).astype(int)  # nearest choice
        grid = np.arange(n, dtype=np.float32) / np.float32(n - 1)
        # XLA's CPU float32 division is not correctly rounded (k / 48 can be 1 ulp off), so
        # "exact" here is: within 1 ulp of k / (n - 1), and bit-stable under re-snapping.
        np.testing.assert_array_max_ulp(s[:, i], grid[k], maxulp=1)
        idx = np.asarray(P.choice_index(jnp.asarray(u), P.NAMES[i]))
        np.testing.assert_array_equal(idx, k)
        # snapping is idempotent and choice_index agrees on snapped values
        np.testing.assert_array_equal(np.asarray(P.snap(jnp.asarray(s)))[:, i], s[:, i])
        np.testing.assert_array_equal(np.asarray(P.choice_index(jnp.asarray(s), P.NAMES[i])), k)


def test_snap_has_zero_gradient_for_discrete_and_identity_for_continuous():
    g = np.asarray(jax.grad(lambda u: jnp.sum(P.snap(u) * jnp.arange(P.N_PARAMS)))(
        jnp.full(P.N_PARAMS, 0.3)))
    np.testing.assert_array_equal(g[DISCRETE], 0.0)
    np.testing.assert_array_equal(g[CONTINUOUS], np.asarray(CONTINUOUS, np.float32))


def test_choice_index_rejects_continuous_parameter():
    with pytest.raises(ValueError, match="continuous"):
        P.choice_index(jnp.asarray(P.DEFAULT_PARAMS01), "filter.cutoff_hz")


def test_sanitize_nan_to_default_and_clip():
    x = np.full(P.N_PARAMS, 0.25, np.float32)
    x[[0, 5, 7]] = np.nan
    x[1], x[2], x[3], x[4] = np.inf, -np.inf, 1.7, -0.2
    s = np.asarray(P.sanitize(jnp.asarray(x)))
    np.testing.assert_array_equal(s[[0, 5, 7]], P.DEFAULT_PARAMS01[[0, 5, 7]])
    np.testing.assert_array_equal(s[1:5], [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(s[8:], 0.25)
    assert np.all(np.isfinite(s))


# ------------------------------------------------------------------ masks and sampling

def test_module_mask_and_param_mask():
    m = P.module_mask(["filter", "osc2"])
    assert m.dtype == bool and m.shape == (P.N_MODULES,) and m.sum() == 2
    pm = np.asarray(P.param_mask(m))
    expect = np.array([s.module in ("filter", "osc2") for s in P.SPECS])
    np.testing.assert_array_equal(pm, expect)
    assert not P.module_mask([]).any() and P.module_mask(P.MODULES).all()
    # batched module masks give batched parameter masks
    assert np.asarray(P.param_mask(np.stack([m, ~m]))).shape == (2, P.N_PARAMS)


def test_module_mask_unknown_module_names_it():
    with pytest.raises(ValueError, match=r"unknown module.*'flter'.*known modules"):
        P.module_mask(["osc1", "flter"])


def test_sample_params01_locked_modules_hold_defaults_and_unlocked_are_uniform():
    mask = P.module_mask(["osc1", "filter", "unison", "output"])
    pm = np.asarray(P.param_mask(mask))
    n = 4 * ROWS
    x = np.asarray(P.sample_params01(jax.random.key(0), mask, shape=(n,)))
    assert x.shape == (n, P.N_PARAMS) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, ~pm], np.broadcast_to(P.DEFAULT_PARAMS01[~pm], (n, (~pm).sum())))
    for i in np.flatnonzero(pm):
        if P.SPECS[i].discrete:
            # uniform u snapped to the nearest of n choices: the end choices own half a bin
            c = len(P.SPECS[i].choices)
            counts = np.bincount(np.asarray(P.choice_index(jnp.asarray(x), P.NAMES[i])), minlength=c)
            p = np.full(c, 1.0 / (c - 1))
            p[[0, -1]] /= 2
            assert stats.chisquare(counts, p * n).pvalue > 1e-4, (P.NAMES[i], counts)
        else:
            # p > 1e-4: a correct sampler fails this with probability 1e-4 per parameter
            assert stats.kstest(x[:, i], "uniform").pvalue > 1e-4, P.NAMES[i]


def test_sample_params01_is_seeded_and_takes_custom_defaults():
    mask = P.module_mask(["lfo"])
    a = np.asarray(P.sample_params01(jax.random.key(7), mask, shape=(ROWS,)))
    b = np.asarray(P.sample_params01(jax.random.key(7), mask, shape=(ROWS,)))
    c = np.asarray(P.sample_params01(jax.random.key(8), mask, shape=(ROWS,)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    d = np.full(P.N_PARAMS, 0.5, np.float32)
    e = np.asarray(P.sample_params01(jax.random.key(7), mask, d, shape=(ROWS,)))
    locked = ~np.asarray(P.param_mask(mask))
    # locked entries hold the given defaults, snapped (0.5 is no choice of unison.voices)
    np.testing.assert_array_equal(e[:, locked], np.broadcast_to(np.asarray(P.snap(d))[locked], (ROWS, locked.sum())))
    assert np.asarray(P.snap(d))[P.INDEX["unison.voices"]] != 0.5
    assert np.asarray(P.sample_params01(jax.random.key(0), mask)).shape == (P.N_PARAMS,)


# ------------------------------------------------------------------ presets

def random_preset(seed: int) -> np.ndarray:
    u = np.random.default_rng(seed).uniform(0, 1, P.N_PARAMS).astype(np.float32)
    return np.asarray(P.snap(jnp.asarray(u)))


def test_preset_json_round_trip_physical_units_and_choice_names(tmp_path):
    x = random_preset(3)
    path = tmp_path / "p.json"
    P.save_preset(path, x)
    data = json.loads(path.read_text())
    assert data["format"] == "jaxsynth-preset" and set(data["params"]) == set(P.NAMES)
    phys = reference_denormalize(x.astype(np.float64))
    for i, s in enumerate(P.SPECS):
        v = data["params"][s.name]
        if s.discrete:
            assert v == s.choices[int(round(x[i] * (len(s.choices) - 1)))], s.name
        else:
            # the file stores physical units rounded to 6 decimals
            assert isinstance(v, float)
            np.testing.assert_allclose(v, phys[i], rtol=1e-5, atol=1e-6, err_msg=s.name)
    y = P.load_preset(path)
    assert y.dtype == np.float32 and y.shape == (P.N_PARAMS,)
    # 6 printed decimals of a physical value, mapped back through the curve: <= 2e-5 in u
    np.testing.assert_allclose(y, x, atol=2e-5)
    np.testing.assert_array_equal(y[DISCRETE], x[DISCRETE])
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temp file


def test_hand_written_preset_with_choice_names():
    d = {n: float(P.DEFAULT_PHYSICAL[i]) for i, n in enumerate(P.NAMES) if not P.SPECS[i].discrete}
    d.update({"osc1.coarse_st": "-12", "osc2.coarse_st": "7", "unison.voices": "3",
              "filter.type": "highpass", "lfo.shape": "square", "filter.cutoff_hz": 800})
    x = P.preset_from_dict(d)
    assert int(P.choice_index(jnp.asarray(x), "osc1.coarse_st")) == 12
    assert int(P.choice_index(jnp.asarray(x), "osc2.coarse_st")) == 31
    assert int(P.choice_index(jnp.asarray(x), "unison.voices")) == 2
    assert int(P.choice_index(jnp.asarray(x), "filter.type")) == 2
    assert int(P.choice_index(jnp.asarray(x), "lfo.shape")) == 3
    np.testing.assert_allclose(x[P.INDEX["filter.cutoff_hz"]], 0.5, atol=1e-6)  # geometric mid
    partial = P.preset_from_dict({"filter.cutoff_hz": 800.0}, fill_defaults=True)
    expect = P.DEFAULT_PARAMS01.copy()
    expect[P.INDEX["filter.cutoff_hz"]] = 0.5
    np.testing.assert_allclose(partial, expect, atol=1e-6)


def full_dict(**over):
    d = P.preset_to_dict(P.DEFAULT_PARAMS01)
    d.update(over)
    return d


@pytest.mark.parametrize("preset, match", [
    ({**full_dict(), "filter.cutof_hz": 100.0}, r"unknown parameter name.*filter\.cutof_hz"),
    (full_dict(**{"filter.cutoff_hz": float("nan")}), r"filter\.cutoff_hz.*not finite.*\[40\.0, 16000\.0\]"),
    (full_dict(**{"filter.cutoff_hz": 20.0}), r"filter\.cutoff_hz=20\.0 Hz is out of range \[40\.0, 16000\.0\]"),
    (full_dict(**{"amp_env.attack_s": "fast"}), r"amp_env\.attack_s='fast' is not a number"),
    (full_dict(**{"filter.type": "notch"}), r"filter\.type='notch' is not one of \['lowpass'"),
    ({"filter.cutoff_hz": 100.0}, r"missing \[.*osc1\.shape.*fill_defaults=True"),
    ([0.5] * P.N_PARAMS, r"mapping of parameter name"),
])
def test_bad_preset_dicts(preset, match):
    with pytest.raises(PresetError, match=match):
        P.preset_from_dict(preset)


@pytest.mark.parametrize("vector, match", [
    (np.full(P.N_PARAMS - 1, 0.5), r"last axis 33.*got shape \(32,\)"),
    (np.full(P.N_PARAMS + 1, 0.5), r"last axis 33.*got shape \(34,\)"),
    (np.float32(0.5), r"last axis 33"),
    (np.where(np.arange(P.N_PARAMS) == 14, np.nan, 0.5), r"NaN/Inf at \['filter\.cutoff_hz'\]"),
    (np.where(np.arange(P.N_PARAMS) == 0, 1.5, 0.5), r"\[0, 1\]; out of range: \['osc1\.shape'\].*np\.clip"),
    (np.full((2, P.N_PARAMS), 0.5), r"one vector of 33 values, got shape \(2, 33\)"),
])
def test_bad_vectors_cannot_be_saved(tmp_path, vector, match):
    path = tmp_path / "p.json"
    with pytest.raises(PresetError, match=match):
        P.save_preset(path, vector)
    assert not path.exists()


def test_failed_save_keeps_the_existing_file(tmp_path):
    path = tmp_path / "p.json"
    P.save_preset(path, P.DEFAULT_PARAMS01)
    before = path.read_bytes()
    with pytest.raises(PresetError):
        P.save_preset(path, np.full(P.N_PARAMS, np.nan))
    assert path.read_bytes() == before


def test_bad_preset_files(tmp_path):
    with pytest.raises(PresetError, match=r"does not exist"):
        P.load_preset(tmp_path / "missing.json")
    (tmp_path / "trunc.json").write_text('{"params": {"osc1.shape": 0.5,')
    with pytest.raises(PresetError, match=r"not valid JSON.*save_preset"):
        P.load_preset(tmp_path / "trunc.json")
    (tmp_path / "bin.json").write_bytes(b"RIFF\x24\x08\x00\x00WAVEfmt \x10\x00\xff\xfe\x80\x81")
    with pytest.raises(PresetError, match=r"not valid JSON"):
        P.load_preset(tmp_path / "bin.json")
    (tmp_path / "empty.json").write_bytes(b"")
    with pytest.raises(PresetError, match=r"not valid JSON"):
        P.load_preset(tmp_path / "empty.json")
    (tmp_path / "noparams.json").write_text('{"format": "jaxsynth-preset"}')
    with pytest.raises(PresetError, match=r"no 'params' object"):
        P.load_preset(tmp_path / "noparams.json")
    (tmp_path / "list.json").write_text("[1, 2, 3]")
    with pytest.raises(PresetError, match=r"no 'params' object"):
        P.load_preset(tmp_path / "list.json")
    (tmp_path / "short.json").write_text(json.dumps({"params": {"osc1.shape": 0.5}}))
    with pytest.raises(PresetError, match=r"missing"):
        P.load_preset(tmp_path / "short.json")
    with pytest.raises(PresetError, match=r"cannot be read.*[Ii]s a directory"):
        P.load_preset(tmp_path)


def test_save_preset_never_writes_through_a_planted_tmp_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    path = tmp_path / "p.json"
    os.symlink(victim, tmp_path / "p.json.tmp")
    P.save_preset(path, P.DEFAULT_PARAMS01)
    assert victim.read_text() == "precious"
    np.testing.assert_array_equal(P.load_preset(path), P.load_preset(path))
    assert not path.is_symlink()


def test_concurrent_preset_writers_both_succeed_and_the_file_is_whole(tmp_path, monkeypatch):
    """A second writer runs while the first is about to rename: with a shared temp name the
    second truncates and moves the first's file and the first crashes."""
    path = tmp_path / "p.json"
    inner = random_preset(7)
    outer = random_preset(8)
    real_replace = os.replace
    calls = []

    def replace_with_a_writer_in_between(src, dst):
        if not calls:
            calls.append(src)
            P.save_preset(path, inner)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_with_a_writer_in_between)
    P.save_preset(path, outer)
    monkeypatch.undo()
    np.testing.assert_allclose(P.load_preset(path), outer, atol=1e-5)
    assert os.listdir(tmp_path) == ["p.json"]


def _preset_file(tmp_path, **fields) -> str:
    data = {"format": "jaxsynth-preset", "version": 1, "params": P.preset_to_dict(P.DEFAULT_PARAMS01)}
    data.update(fields)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    return path


def test_deeply_nested_preset_is_a_preset_error_not_recursion_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"params": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(PresetError, match=r"nested too deeply.*save_preset"):
        P.load_preset(path)


def test_boolean_is_not_a_number(tmp_path):
    d = P.preset_to_dict(P.DEFAULT_PARAMS01)
    d["filter.cutoff_hz"] = True
    with pytest.raises(PresetError, match=r"filter\.cutoff_hz=True is a boolean, not a number"):
        P.preset_from_dict(d)
    with pytest.raises(PresetError, match=r"boolean"):
        P.load_preset(_preset_file(tmp_path, params=d))


@pytest.mark.parametrize("fields, match", [
    ({"format": "serum-preset"}, r"format 'serum-preset'.*expected 'jaxsynth-preset'"),
    ({"format": 3}, r"format 3.*expected 'jaxsynth-preset'"),
    ({"version": 999}, r"version 999.*supports version 1"),
    ({"version": "1"}, r"version '1'.*supports version 1"),
    ({"version": True}, r"version True.*supports version 1"),
])
def test_unknown_format_or_version_is_rejected(tmp_path, fields, match):
    with pytest.raises(PresetError, match=match):
        P.load_preset(_preset_file(tmp_path, **fields))


def test_preset_without_format_and_version_is_accepted_as_hand_written(tmp_path):
    path = tmp_path / "hand.json"
    path.write_text(json.dumps({"params": P.preset_to_dict(P.DEFAULT_PARAMS01)}))
    np.testing.assert_allclose(P.load_preset(path), P.snap(P.DEFAULT_PARAMS01), atol=1e-5)
