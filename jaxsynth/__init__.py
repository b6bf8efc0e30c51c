"""jaxsynth: a differentiable subtractive synth and spectral matching losses in JAX."""

from jaxsynth.params import (DEFAULT_PARAMS01, MODULES, N_PARAMS, NAMES, PresetError,
                             denormalize, load_preset, normalize, sample_params01, save_preset)
from jaxsynth.synth import SynthConfig, render, render_batch

__all__ = ["DEFAULT_PARAMS01", "MODULES", "N_PARAMS", "NAMES", "PresetError", "SynthConfig",
           "denormalize", "load_preset", "normalize", "render", "render_batch",
           "sample_params01", "save_preset"]
