"""Shared test setup.

* The persistent XLA compilation cache (``~/.cache/jaxsynth/xla``, the folder
  ``python -m agents.sac_train`` uses too; ``JAX_COMPILATION_CACHE_DIR`` overrides it) for this
  session and, through the environment, for the CLIs and notebook kernels the tests start:
  a program compiled once (by an earlier test, a subprocess or an earlier run) is loaded, not
  compiled again. Results do not depend on it: a cached executable is the same program.
* Session-scoped fixtures for what several test files share, so that each compiled function
  is built (and the short training run trained) once per session.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(Path.home() / ".cache" / "jaxsynth" / "xla")
# Every program is cached, the small ones too: loading one takes ~10 ms, compiling even a small one
# (an eager op, a helper jit) 30-100 ms, and a test session compiles hundreds of them; the CLIs and
# kernels the tests start, and the next session, load them instead (2-core AMD EPYC, two env test
# files with a warm cache: 34.5 CPU-s with a 0.5 s threshold, 25.5 CPU-s with none).
MIN_COMPILE_S = "0"
os.environ["JAX_COMPILATION_CACHE_DIR"] = CACHE_DIR  # inherited by subprocesses
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", MIN_COMPILE_S)

import jax  # noqa: E402  (after the environment above, which subprocesses inherit)
import pytest  # noqa: E402

jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


@pytest.fixture(scope="session")
def tiny_env_config():
    """The cheapest env that still renders, analyses and rewards like the real one: 0.1 s
    clips, one 512-point STFT (hop 128, 16 mels), two MR-STFT sizes, 4 targets per stage,
    24-step episodes (the two kept CMA-ES trajectories of the teacher test take 18 steps each)."""
    from agents.env import EnvConfig
    from jaxsynth.features import FeatureConfig
    from jaxsynth.synth import SynthConfig
    sr, dur = 22050, 0.1
    return EnvConfig(synth=SynthConfig(sample_rate=sr, duration_s=dur),
                     features=FeatureConfig(sample_rate=sr, duration_s=dur, n_fft=512, hop_length=128,
                                            n_mels=16, n_mfcc=13, mrstft_fft_sizes=(256, 512)),
                     max_steps=24, bank_size=4, n_start_presets=1, build_chunk=4)


@pytest.fixture(scope="session")
def tiny_env(tiny_env_config):
    """(env, env params) on ``tiny_env_config``, its target bank built once per session."""
    from agents.env import SynthMatchEnv
    env = SynthMatchEnv(tiny_env_config)
    return env, env.default_params(jax.random.key(0))


@pytest.fixture(scope="session")
def match_config():
    """The one matcher configuration of the search/evaluation tests (0.25 s clips): equal
    static configs share compiled render + loss graphs across test files."""
    from agents.search.common import MatchConfig
    from jaxsynth.synth import SynthConfig
    return MatchConfig(synth=SynthConfig(duration_s=0.25))


# The one short training run of the test session (stage 0, 0.1 s clips, 32 envs, 8 env steps in
# two chunks): tests/agents/sac/test_run.py checks learning, resume and checkpoint errors on it,
# tests/agents/sac/test_policy.py loads its checkpoint as a policy.
SHORT_RUN = dict(envs=32, total_steps=8, chunk_steps=4, updates_per_step=16, batch_size=64,
                 bank_size=8, n_heldout=16, max_steps=3, duration_s=0.1, hidden=(64, 64),
                 buffer_capacity=512, lr=1e-3)
QUIET_RUN = dict(progress=False, media=False, tensorboard=False)


@pytest.fixture(scope="session")
def short_run_config():
    from agents.sac.config import TrainConfig
    return TrainConfig(**SHORT_RUN)


@pytest.fixture(scope="session")
def short_run_setup(short_run_config):
    """``agents.sac.run.Setup`` (banks, compiled trainer) of the short run, built once."""
    from agents.sac import run as sac_run
    return sac_run.Setup(short_run_config)


@pytest.fixture(scope="session")
def short_run(short_run_config, short_run_setup, tmp_path_factory):
    """(summary, run dir) of the short run, trained once per session. Read it, do not write it."""
    from agents.sac import run as sac_run
    from agents.sac.config import RunOptions
    out = tmp_path_factory.mktemp("short_run")
    summary = sac_run.run(short_run_config, RunOptions(out=str(out), **QUIET_RUN),
                          log=lambda *a: None, setup=short_run_setup)
    return summary, out
