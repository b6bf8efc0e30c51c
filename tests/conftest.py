"""Shared test setup.

* The persistent XLA compilation cache (``~/.cache/jaxsynth/xla``, the folder
  ``python -m agents.sac_train`` uses too; ``JAX_COMPILATION_CACHE_DIR`` overrides it) for this
  session and, through the environment, for the CLIs and notebook kernels the tests start:
  a program compiled once (by an earlier test, a subprocess or an earlier run) is loaded, not
  compiled again. Results do not depend on it: a cached executable is the same program.
* Session-scoped fixtures for the configurations several test files share, so that each
  compiled function is built once per session.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(Path.home() / ".cache" / "jaxsynth" / "xla")
MIN_COMPILE_S = "0.5"  # smaller programs compile faster than they load
os.environ["JAX_COMPILATION_CACHE_DIR"] = CACHE_DIR  # inherited by subprocesses
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", MIN_COMPILE_S)

import jax  # noqa: E402  (after the environment above, which subprocesses inherit)
import pytest  # noqa: E402

jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
