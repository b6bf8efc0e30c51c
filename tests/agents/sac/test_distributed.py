"""agents/sac/distributed.py and multi-process training: two local processes (one CPU device
each, jax.distributed with gloo collectives) train exactly what one process with two devices
trains."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from agents.sac import distributed as dist

ROOT = Path(__file__).resolve().parents[3]
FLAGS = ["--envs", "4", "--total-steps", "4", "--chunk-steps", "2", "--max-steps", "2",
         "--updates-per-step", "2", "--batch-size", "8", "--bank-size", "2", "--heldout", "2",
         "--hidden", "16", "16", "--duration", "0.1", "--buffer-capacity", "64", "--seed", "5",
         "--no-media", "--no-progress", "--no-tensorboard"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))


def _train(out: Path, extra: list[str], devices: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "agents.sac_train", *FLAGS, "--out", str(out), *extra],
                            env=_env(devices), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    return out


def test_two_processes_train_exactly_what_one_process_with_two_devices_trains(tmp_path):
    """Same program, same SPMD partition over two devices; only where the devices live differs
    (one process, or two processes joined by jax.distributed). The cross-device reductions
    combine two operands, which float addition does in either order identically, so the held-out
    losses and the trained actor must agree bit for bit (measured: equal)."""
    single, multi = tmp_path / "one_process", tmp_path / "two_processes"
    port = _free_port()
    procs = [_train(single, [], devices=2)] + [  # all three at once: their compilations overlap
        _train(multi, ["--distributed", "--coordinator-address", f"127.0.0.1:{port}",
                       "--num-processes", "2", "--process-id", str(i)], devices=1) for i in (0, 1)]
    logs = [_finish(p) for p in procs][1:]
    assert "2 device(s) in 2 process(es)" in logs[0]
    a = json.loads((single / "summary.json").read_text())
    b = json.loads((multi / "summary.json").read_text())
    assert a["heldout_median_loss"] == b["heldout_median_loss"]
    assert a["heldout_median_final_loss"] == b["heldout_median_final_loss"]
    # only process 0 writes: one metrics file, checkpoints of both chunks
    assert sorted(p.name for p in (multi / "checkpoints").iterdir() if p.name.isdigit()) == ["1", "2"]
    from agents.sac.policy import load_policy
    pa, pb = load_policy(single).actor_params, load_policy(multi).actor_params
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_settings_from_flags_environment_or_detection(monkeypatch):
    for name in (dist.ENV_ADDRESS, dist.ENV_COUNT, dist.ENV_ID):
        monkeypatch.delenv(name, raising=False)
    assert dist.settings(None, None, None) == {}  # jax.distributed detects the cluster
    assert dist.settings("h:1", 2, 1) == {"coordinator_address": "h:1", "num_processes": 2, "process_id": 1}
    monkeypatch.setenv(dist.ENV_ADDRESS, "host:9")
    monkeypatch.setenv(dist.ENV_COUNT, "4")
    monkeypatch.setenv(dist.ENV_ID, "3")
    assert dist.settings(None, None, None) == {"coordinator_address": "host:9", "num_processes": 4,
                                               "process_id": 3}
    assert dist.settings(None, None, 0)["process_id"] == 0  # a flag beats the environment


@pytest.mark.parametrize("args, match", [(("h:1", 2, None), "all of"), (("h:1", 2, 2), r"\[0, 1\]"),
                                         (("h:1", 0, 0), "process id")])
def test_bad_settings_say_what_to_give(monkeypatch, args, match):
    for name in (dist.ENV_ADDRESS, dist.ENV_COUNT, dist.ENV_ID):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(dist.DistributedError, match=match):
        dist.settings(*args)


def test_single_process_helpers_are_the_identity():
    tree = {"a": jax.numpy.arange(3.0), "k": jax.random.key(0)}
    assert dist.replicate(tree) is tree
    assert dist.put_like(tree, tree) is tree
    host = dist.to_host({"a": tree["a"]})
    assert isinstance(host["a"], np.ndarray)
