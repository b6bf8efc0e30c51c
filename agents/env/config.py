"""Static environment settings: what is rendered, analysed and rewarded, and the episode shape.

``EnvConfig`` is hashable (a static argument under jit); ``small_config`` is the cheap
configuration of tests and CPU smoke runs; ``default_max_delta`` the per-parameter edit scale.
The environment itself is ``agents.env.environment``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jaxsynth import params as P
from jaxsynth.features import FeatureConfig
from jaxsynth.losses import LossWeights
from jaxsynth.perceptual import PerceptualConfig
from jaxsynth.reward import RewardConfig
from jaxsynth.synth import SynthConfig

LOG_MEL_CENTER_DB = -40.0  # flatten_obs / scale_obs: (dB - center) / scale, values O(1)


LOG_MEL_SCALE_DB = 40.0


@dataclass(frozen=True)
class EnvConfig:
    """Static environment settings (hashable; shapes and compile-time choices)."""

    synth: SynthConfig = SynthConfig()
    features: FeatureConfig = FeatureConfig()
    loss_weights: LossWeights = LossWeights()
    reward: RewardConfig = RewardConfig()
    max_steps: int = 50
    bank_size: int = 128  # training targets per stage
    init: str = "default"  # "default": start from DEFAULT_PARAMS01; "random": a stage preset
    n_start_presets: int = 32  # start presets per stage when init == "random"
    note: float = 60.0  # MIDI note of every render
    velocity: float = 1.0
    discrete: str = "snap"  # discrete parameters: "snap" | "latent" (see the module docstring)
    build_chunk: int = 32  # sounds per jitted chunk when building the bank
    perceptual: PerceptualConfig | None = None  # CREPE terms (used only when their loss weight > 0)

    def __post_init__(self):
        checks = [
            (self.init in ("default", "random"), f"init must be 'default' or 'random', got {self.init!r}"),
            (self.discrete in ("snap", "latent"), f"discrete must be 'snap' or 'latent', got {self.discrete!r}"),
            (self.synth.sample_rate == self.features.sample_rate,
             f"synth.sample_rate {self.synth.sample_rate} != features.sample_rate "
             f"{self.features.sample_rate}; give both configs the same rate"),
            (self.synth.num_samples == self.features.num_samples,
             f"synth renders {self.synth.num_samples} samples but features expect "
             f"{self.features.num_samples}; give both configs the same duration_s"),
            (self.max_steps >= 1, "max_steps must be >= 1"),
            (self.reward.perceptual_scale == 0,
             "reward.perceptual_scale must be 0 in the env (it keeps no previous CREPE distance); "
             "weight the CREPE terms in loss_weights instead (crepe_embedding, pitch_posterior_cents)"),
            (self.bank_size >= 1 and self.n_start_presets >= 1 and self.build_chunk >= 1,
             "bank_size, n_start_presets and build_chunk must be >= 1"),
            (0.0 <= self.note <= 127.0 and 0.0 <= self.velocity <= 1.0,
             "note must be in [0, 127] and velocity in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"EnvConfig: {message}")

    @property
    def num_frames(self) -> int:
        return self.features.num_frames

    @property
    def n_mels(self) -> int:
        return self.features.n_mels


def small_config(duration_s: float = 0.15, **overrides) -> EnvConfig:
    """A cheap configuration for tests and CPU smoke runs: a short clip, 32 mel bands, three
    MR-STFT resolutions, 8 targets and 4 start presets per stage, 5-step episodes."""
    sr = 22050
    defaults = dict(
        synth=SynthConfig(sample_rate=sr, duration_s=duration_s),
        features=FeatureConfig(sample_rate=sr, duration_s=duration_s, n_mels=32,
                               mrstft_fft_sizes=(256, 512, 1024)),
        max_steps=5, bank_size=8, n_start_presets=4, build_chunk=8)
    defaults.update(overrides)
    return EnvConfig(**defaults)


def default_max_delta(base: float = 0.2) -> np.ndarray:
    """(N_PARAMS,) per-parameter edit scale: ``base`` for continuous parameters, at least one
    choice step (1 / (n_choices - 1)) for discrete ones, so a full delta always reaches the
    next choice under snapping."""
    step = np.array([1.0 / (len(s.choices) - 1) if s.discrete else 0.0 for s in P.SPECS], np.float32)
    return np.maximum(np.float32(base), step).astype(np.float32)
