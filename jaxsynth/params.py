"""The synth's parameter space: names, modules, physical ranges, curves, defaults, choices.

Agents see every parameter **normalized to [0, 1]** (``params01``); the synth sees physical
units. A curve maps one to the other so that equal steps in [0, 1] are roughly equal
perceptual steps: ``log`` for frequencies and times, ``linear`` for mixes, ``exp`` (a power
curve) for amounts that matter most near zero. Discrete parameters (coarse tune, unison voice
count, filter type, LFO shape) are floats in [0, 1] that are *snapped* to one of their choices
(the snapping rule every matcher and the env share): the choice index is ``round(u * (n - 1))``.

The table is built once, in NumPy, at import; the jitted functions close over its arrays.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxsynth.io import atomic_write


@dataclass(frozen=True)
class ParamSpec:
    """One synth parameter. ``low``/``high`` are physical units (named in ``unit``)."""

    name: str
    module: str
    low: float
    high: float
    default: float
    unit: str
    curve: str = "linear"  # "linear" | "log" | "exp"
    exponent: float = 1.0  # only for curve == "exp": physical = low + (high-low) * u**exponent
    choices: tuple[str, ...] = ()  # non-empty for discrete parameters

    @property
    def discrete(self) -> bool:
        return len(self.choices) > 0


def _choice(name, module, choices, default_index, unit="choice"):
    n = len(choices)
    return ParamSpec(name, module, 0.0, float(n - 1), float(default_index), unit, "linear", 1.0,
                     tuple(choices))


MAX_UNISON = 4  # voices rendered for every sound; the voice count masks the unused ones
_SEMITONES = tuple(str(s) for s in range(-24, 25))
_OSC_CHOICES = ("sine", "triangle", "saw", "square")

SPECS: tuple[ParamSpec, ...] = (
    # osc1: shape morphs sine -> triangle -> saw -> square continuously (0, 1/3, 2/3, 1).
    ParamSpec("osc1.shape", "osc1", 0.0, 1.0, 2 / 3, "morph"),
    ParamSpec("osc1.pulse_width", "osc1", 0.05, 0.95, 0.5, "cycle"),
    _choice("osc1.coarse_st", "osc1", _SEMITONES, 24, "semitones"),
    ParamSpec("osc1.fine_cents", "osc1", -100.0, 100.0, 0.0, "cents"),
    ParamSpec("osc1.level", "osc1", 0.0, 1.0, 0.8, "gain", "exp", 2.0),
    ParamSpec("osc2.shape", "osc2", 0.0, 1.0, 1.0, "morph"),
    ParamSpec("osc2.pulse_width", "osc2", 0.05, 0.95, 0.5, "cycle"),
    _choice("osc2.coarse_st", "osc2", _SEMITONES, 24, "semitones"),
    ParamSpec("osc2.fine_cents", "osc2", -100.0, 100.0, 0.0, "cents"),
    ParamSpec("osc2.level", "osc2", 0.0, 1.0, 0.0, "gain", "exp", 2.0),
    # unison: voice count is discrete (1..MAX_UNISON, snapped), detune
    # spreads the voices symmetrically over +-detune_cents.
    _choice("unison.voices", "unison", tuple(str(n + 1) for n in range(MAX_UNISON)), 0, "voices"),
    ParamSpec("unison.detune_cents", "unison", 0.0, 50.0, 10.0, "cents", "exp", 2.0),
    ParamSpec("noise.level", "noise", 0.0, 1.0, 0.0, "gain", "exp", 2.0),
    _choice("filter.type", "filter", ("lowpass", "bandpass", "highpass"), 0),
    ParamSpec("filter.cutoff_hz", "filter", 40.0, 16000.0, 4000.0, "Hz", "log"),
    ParamSpec("filter.resonance_q", "filter", 0.5, 12.0, 0.707, "Q", "log"),
    ParamSpec("filter.key_track", "filter", 0.0, 1.0, 0.0, "octave/octave"),
    ParamSpec("filter.env_amount_oct", "filter", -4.0, 4.0, 0.0, "octaves"),
    ParamSpec("filter_env.attack_s", "filter_env", 0.001, 2.0, 0.01, "s", "log"),
    ParamSpec("filter_env.decay_s", "filter_env", 0.001, 2.0, 0.2, "s", "log"),
    ParamSpec("filter_env.sustain", "filter_env", 0.0, 1.0, 0.5, "level"),
    ParamSpec("filter_env.release_s", "filter_env", 0.001, 2.0, 0.1, "s", "log"),
    ParamSpec("amp_env.attack_s", "amp_env", 0.001, 2.0, 0.005, "s", "log"),
    ParamSpec("amp_env.decay_s", "amp_env", 0.001, 2.0, 0.2, "s", "log"),
    ParamSpec("amp_env.sustain", "amp_env", 0.0, 1.0, 0.8, "level"),
    ParamSpec("amp_env.release_s", "amp_env", 0.001, 2.0, 0.05, "s", "log"),
    _choice("lfo.shape", "lfo", ("sine", "triangle", "saw", "square"), 0),
    ParamSpec("lfo.rate_hz", "lfo", 0.1, 20.0, 5.0, "Hz", "log"),
    ParamSpec("lfo.to_pitch_st", "lfo", 0.0, 12.0, 0.0, "semitones", "exp", 3.0),
    ParamSpec("lfo.to_cutoff_oct", "lfo", 0.0, 4.0, 0.0, "octaves", "exp", 2.0),
    ParamSpec("lfo.to_amp", "lfo", 0.0, 1.0, 0.0, "depth", "exp", 2.0),
    ParamSpec("output.drive_db", "output", 0.0, 24.0, 0.0, "dB"),
    ParamSpec("output.gain_db", "output", -24.0, 0.0, -6.0, "dB"),
)

NAMES: tuple[str, ...] = tuple(s.name for s in SPECS)
MODULES: tuple[str, ...] = tuple(dict.fromkeys(s.module for s in SPECS))
N_PARAMS = len(SPECS)
N_MODULES = len(MODULES)
INDEX: dict[str, int] = {n: i for i, n in enumerate(NAMES)}
OSC_SHAPES = _OSC_CHOICES

# Per-parameter tables, built once.
_LOW = np.array([s.low for s in SPECS], np.float32)
_HIGH = np.array([s.high for s in SPECS], np.float32)
_IS_LOG = np.array([s.curve == "log" for s in SPECS])
# log(high / low) for log-curve parameters (their low is > 0), 0 elsewhere
_LOG_RATIO = np.array([math.log(s.high / s.low) if s.curve == "log" else 0.0 for s in SPECS],
                      np.float32)
_SAFE_LOW = np.where(_IS_LOG, _LOW, 1.0).astype(np.float32)
_IS_EXP = np.array([s.curve == "exp" for s in SPECS])
_EXPONENT = np.array([s.exponent for s in SPECS], np.float32)
_N_CHOICES = np.array([len(s.choices) if s.discrete else 0 for s in SPECS], np.float32)
IS_DISCRETE = np.array([s.discrete for s in SPECS])
MODULE_OF_PARAM = np.array([MODULES.index(s.module) for s in SPECS], np.int32)
# MODULE_PARAMS[m, i] is True when parameter i belongs to module m.
MODULE_PARAMS = MODULE_OF_PARAM[None, :] == np.arange(N_MODULES)[:, None]


def _to_unit_np(x: np.ndarray) -> np.ndarray:
    """Physical -> normalized, in NumPy (inverse of ``denormalize``)."""
    x = np.asarray(x, np.float64)
    lin = (x - _LOW) / (_HIGH - _LOW)
    with np.errstate(divide="ignore", invalid="ignore"):
        log = np.log(np.maximum(x, 1e-30) / _SAFE_LOW) / np.where(_IS_LOG, _LOG_RATIO, 1.0)
        exp = np.power(np.clip(lin, 0.0, None), 1.0 / _EXPONENT)
    return np.where(_IS_LOG, log, np.where(_IS_EXP, exp, lin))


DEFAULT_PHYSICAL = np.array([s.default for s in SPECS], np.float32)
DEFAULT_PARAMS01 = _to_unit_np(DEFAULT_PHYSICAL).astype(np.float32)


def denormalize(params01: Float[Array, "... n_params"]) -> Float[Array, "... n_params"]:
    """Normalized [0, 1] -> physical units, per each parameter's curve. Discrete parameters
    are snapped to their choice value (an index, or the value it names)."""
    u = snap(params01)
    lin = _LOW + (_HIGH - _LOW) * u
    log = _LOW * jnp.exp(u * _LOG_RATIO)
    exp = _LOW + (_HIGH - _LOW) * jnp.power(jnp.maximum(u, 0.0), _EXPONENT)
    return jnp.where(_IS_LOG, log, jnp.where(_IS_EXP, exp, lin))


def normalize(physical: Float[Array, "... n_params"]) -> Float[Array, "... n_params"]:
    """Physical units -> normalized [0, 1] (the inverse of ``denormalize``)."""
    x = jnp.asarray(physical, jnp.float32)
    lin = (x - _LOW) / (_HIGH - _LOW)
    log = jnp.log(jnp.maximum(x, 1e-30) / _SAFE_LOW) / np.where(_IS_LOG, _LOG_RATIO, 1.0)
    exp = jnp.power(jnp.maximum(lin, 0.0), 1.0 / _EXPONENT)
    return jnp.where(_IS_LOG, log, jnp.where(_IS_EXP, exp, lin))


def snap(params01: Float[Array, "... n_params"]) -> Float[Array, "... n_params"]:
    """Snap discrete parameters to the nearest of their n choices (u in {0, 1/(n-1), ..., 1});
    continuous parameters pass unchanged (and keep their gradients; discrete ones have none)."""
    steps = np.maximum(_N_CHOICES - 1, 1.0)
    snapped = jnp.round(params01 * steps) / steps
    return jnp.where(IS_DISCRETE, snapped, params01)


def choice_index(params01: Float[Array, "... n_params"], name: str) -> jax.Array:
    """The integer choice of discrete parameter ``name``."""
    i = INDEX[name]
    n = len(SPECS[i].choices)
    if n == 0:
        raise ValueError(f"{name!r} is continuous; choice_index is for discrete parameters")
    return jnp.round(jnp.clip(params01[..., i], 0.0, 1.0) * (n - 1)).astype(jnp.int32)


def sanitize(params01: Float[Array, "... n_params"]) -> Float[Array, "... n_params"]:
    """Inside-jit guard: NaN -> the default, +-Inf and out-of-range values -> clipped to [0, 1]."""
    x = jnp.where(jnp.isnan(params01), DEFAULT_PARAMS01, params01)
    return jnp.clip(x, 0.0, 1.0)


# ----------------------------------------------------------------------------- modules, masks


def module_mask(modules: Sequence[str]) -> np.ndarray:
    """Boolean mask over MODULES: True for the named (editable) modules."""
    unknown = sorted(set(modules) - set(MODULES))
    if unknown:
        raise ValueError(f"unknown module(s) {unknown}; known modules are {list(MODULES)}")
    return np.array([m in modules for m in MODULES])


def param_mask(module_mask_: np.ndarray | jax.Array) -> jax.Array:
    """Module mask (n_modules,) -> parameter mask (n_params,)."""
    return jnp.asarray(module_mask_)[..., MODULE_OF_PARAM]


def sample_params01(key: jax.Array, module_mask_, defaults01=DEFAULT_PARAMS01,
                    shape: tuple[int, ...] = ()) -> Float[Array, "... n_params"]:
    """Presets uniform in normalized space for unlocked modules; locked modules hold
    ``defaults01``. Discrete parameters are snapped."""
    u = jax.random.uniform(key, shape + (N_PARAMS,), jnp.float32)
    return snap(jnp.where(param_mask(module_mask_), u, jnp.asarray(defaults01)))


# ----------------------------------------------------------------------------- validation, JSON


class PresetError(ValueError):
    """A preset or parameter vector that cannot be rendered, with what to do about it."""


def validate_params01(params01) -> np.ndarray:
    """Public-boundary check of a normalized vector (or batch): shape, finiteness, range."""
    x = np.asarray(params01)
    if x.ndim == 0 or x.shape[-1] != N_PARAMS:
        raise PresetError(
            f"expected normalized parameters with last axis {N_PARAMS} (one per entry of "
            f"jaxsynth.params.NAMES), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        names = sorted({NAMES[i] for i in np.argwhere(bad)[:, -1]})
        raise PresetError(f"normalized parameters contain NaN/Inf at {names}; "
                          "replace them (e.g. with jaxsynth.params.DEFAULT_PARAMS01)")
    out = (x < 0.0) | (x > 1.0)
    if out.any():
        names = sorted({NAMES[i] for i in np.argwhere(out)[:, -1]})
        raise PresetError(f"normalized parameters must lie in [0, 1]; out of range: {names}. "
                          "Clip them (np.clip(x, 0, 1)) or fix the source of the values")
    return x.astype(np.float32)


def preset_to_dict(params01) -> dict[str, float | str]:
    """Normalized vector -> human-readable preset: physical units, choices by name."""
    x = validate_params01(params01)
    if x.ndim != 1:
        raise PresetError(f"a preset is one vector of {N_PARAMS} values, got shape {x.shape}")
    phys = np.asarray(denormalize(jnp.asarray(x)))
    out: dict[str, float | str] = {}
    for spec, u, v in zip(SPECS, x, phys):
        if spec.discrete:
            out[spec.name] = spec.choices[int(round(float(u) * (len(spec.choices) - 1)))]
        else:
            out[spec.name] = round(float(v), 6)
    return out


def preset_from_dict(preset: Mapping[str, float | str], *, fill_defaults: bool = False) -> np.ndarray:
    """Human-readable preset (physical units) -> normalized vector, with clear errors."""
    if not isinstance(preset, Mapping):
        raise PresetError(f"a preset is a mapping of parameter name -> value, got {type(preset).__name__}")
    unknown = sorted(set(preset) - set(NAMES))
    if unknown:
        raise PresetError(f"unknown parameter name(s) {unknown}; valid names are {list(NAMES)}")
    missing = [n for n in NAMES if n not in preset]
    if missing and not fill_defaults:
        raise PresetError(f"preset is missing {missing}; give every parameter or pass "
                          "fill_defaults=True to use the defaults")
    phys = DEFAULT_PHYSICAL.astype(np.float64).copy()
    for name, value in preset.items():
        spec = SPECS[INDEX[name]]
        if spec.discrete:
            if str(value) not in spec.choices:
                raise PresetError(f"{name}={value!r} is not one of {list(spec.choices)}")
            phys[INDEX[name]] = spec.choices.index(str(value))
            continue
        if isinstance(value, (bool, np.bool_)):
            raise PresetError(f"{name}={value!r} is a boolean, not a number; give a value in "
                              f"[{spec.low}, {spec.high}] {spec.unit}")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise PresetError(f"{name}={value!r} is not a number ({spec.unit})") from None
        if not math.isfinite(v):
            raise PresetError(f"{name}={value!r} is not finite; give a value in "
                              f"[{spec.low}, {spec.high}] {spec.unit}")
        tol = 1e-6 * max(1.0, abs(spec.high))
        if not spec.low - tol <= v <= spec.high + tol:
            raise PresetError(f"{name}={v} {spec.unit} is out of range "
                              f"[{spec.low}, {spec.high}] {spec.unit}")
        phys[INDEX[name]] = min(max(v, spec.low), spec.high)
    u = np.clip(_to_unit_np(phys), 0.0, 1.0).astype(np.float32)
    # discrete entries: exact grid points
    return np.asarray(snap(jnp.asarray(u)))


PRESET_FORMAT = "jaxsynth-preset"
PRESET_VERSION = 1
MAX_PRESET_BYTES = 1 << 20  # a preset is ~1.5 KB; anything near this size is not one


def save_preset(path: str | os.PathLike, params01) -> None:
    """Write a preset as JSON in physical units, atomically (a unique temporary file beside
    it, then a rename: concurrent writers never clash and readers never see half a file)."""
    data = {"format": PRESET_FORMAT, "version": PRESET_VERSION, "params": preset_to_dict(params01)}
    atomic_write(path, json.dumps(data, indent=2) + "\n")


def _check_header(data: dict, where: str) -> None:
    """``format`` and ``version`` may be left out of a hand-written preset, but when given they
    must be ours: a file of another format or a newer version would be read wrongly."""
    if "format" in data and data["format"] != PRESET_FORMAT:
        raise PresetError(f"{where} has format {data['format']!r}, expected {PRESET_FORMAT!r}; "
                          "it is not a jaxsynth preset (write one with jaxsynth.params.save_preset)")
    if "version" in data:
        version = data["version"]
        if isinstance(version, bool) or not isinstance(version, int) or version != PRESET_VERSION:
            raise PresetError(f"{where} has version {version!r}; this jaxsynth supports version "
                              f"{PRESET_VERSION} only. Re-save the preset with this version, or "
                              "upgrade jaxsynth if a newer one wrote it")


def load_preset(path: str | os.PathLike) -> np.ndarray:
    """Read a JSON preset written by ``save_preset`` (or by hand) -> normalized vector.

    Every way a file can be wrong (missing, unreadable, too large, not JSON, nested too deeply,
    another format or version, bad names or values) is a ``PresetError`` saying what and why.
    """
    where = f"preset file {os.fspath(path)!r}"
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PRESET_BYTES + 1)
    except FileNotFoundError:
        raise PresetError(f"{where} does not exist") from None
    except OSError as e:  # a directory, no permission, ...
        raise PresetError(f"{where} cannot be read ({e.strerror}); "
                          "give the path of a .json file written by save_preset") from None
    if len(raw) > MAX_PRESET_BYTES:
        raise PresetError(f"{where} is larger than {MAX_PRESET_BYTES} bytes, far more than a "
                          "preset (~2 KB); it is not one. Give a file written by save_preset")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PresetError(f"{where} is not valid JSON ({e}); "
                          "it should look like the output of jaxsynth.params.save_preset") from None
    except RecursionError:
        raise PresetError(f"{where} is nested too deeply to be a preset (a preset is one flat "
                          "'params' object); it should look like the output of "
                          "jaxsynth.params.save_preset") from None
    params = data.get("params") if isinstance(data, dict) else None
    if params is None:
        raise PresetError(f"{where} has no 'params' object")
    _check_header(data, where)
    return preset_from_dict(params)
