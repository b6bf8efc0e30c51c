"""Fault injection for training runs (agents/sac/run.py, checkpoint.py, logs.py).

Kills (SIGKILL, in a subprocess) inside a compiled chunk, inside orbax's write of a checkpoint
and between a checkpoint's commit and its integrity record; damaged checkpoints (a flipped
4 KiB block, a truncated file, with and without the integrity record); a diverged (NaN)
training state. Each ends in one of two ways: the resumed run equals the uninterrupted one
bit for bit (state, metrics.jsonl rows, TensorBoard scalars, media bound), or a one-line error
that names the damaged checkpoint and the previous good one, with nothing good deleted.
"""

import copy
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from shared_helpers import tb_scalars

from agents.sac import checkpoint as ckpt
from agents.sac import run as sac_run
from agents.sac.config import RunOptions, TrainConfig
from agents.sac.logs import FILES_PER_ITEM, INDEX

FIELDS = dict(envs=8, chunk_steps=2, updates_per_step=2, batch_size=16, bank_size=4, n_heldout=4,
              max_steps=2, duration_s=0.1, hidden=(32, 32), buffer_capacity=64, lr=1e-3)
CFG = TrainConfig(total_steps=8, **FIELDS)  # 4 chunks; checkpoints kept: the 2 newest
OPTS = dict(progress=False, media=True, media_top_k=1, tensorboard=True)
QUIET = dict(log=lambda *a: None)


def cfg_chunks(n: int) -> TrainConfig:
    return TrainConfig(total_steps=n * FIELDS["chunk_steps"], **FIELDS)


@pytest.fixture(scope="module")
def setup():
    return sac_run.Setup(CFG)


@pytest.fixture(scope="module")
def full(setup, tmp_path_factory):
    """The uninterrupted run: its summary and folder."""
    out = tmp_path_factory.mktemp("full")
    return sac_run.run(CFG, RunOptions(out=str(out), **OPTS), setup=setup, **QUIET), out


def rows(out: Path) -> list[tuple]:
    """(kind, step, held-out median) of every metrics.jsonl row, in order."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [(r["kind"], r["step"], r.get("heldout_median_loss")) for r in map(json.loads, lines)]





def media_files(out: Path) -> list[Path]:
    return [p for p in (out / "media").rglob("*") if p.is_file() and p.name != INDEX]


def assert_same_run(out: Path, full_out: Path) -> None:
    """Same final checkpoint (every array's checksum), same log rows, each scalar once."""
    last = ckpt.latest_step(out / "checkpoints")
    assert last == ckpt.latest_step(full_out / "checkpoints")
    got = ckpt.read_metadata(out / "checkpoints", last)["checksums"]
    want = ckpt.read_metadata(full_out / "checkpoints", last)["checksums"]
    assert got == want
    assert rows(out) == rows(full_out)
    scalars = tb_scalars(out)
    assert len(scalars) == len(set(scalars)) and sorted(scalars) == sorted(tb_scalars(full_out))
    assert len(media_files(out)) <= 2 * FILES_PER_ITEM  # one stage, best + worst, top 1


def digests(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def largest_data_file(step_dir: Path) -> Path:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def damage(step_dir: Path, how: str) -> None:
    f = largest_data_file(step_dir)
    size = f.stat().st_size
    if how.startswith("flip"):  # 4 KiB inverted in the middle, size unchanged
        with open(f, "r+b") as fh:
            fh.seek(size // 2)
            block = fh.read(4096)
            fh.seek(size // 2)
            fh.write(bytes(b ^ 0xFF for b in block))
    else:
        os.truncate(f, size // 2)
    if how.endswith("without-record"):
        (step_dir / ckpt.INTEGRITY_FILE).unlink()


# ------------------------------------------------------------------ damaged checkpoints, in process

@pytest.mark.parametrize("how", ["flip", "truncate", "flip-without-record"])
def test_damaged_newest_checkpoint_is_refused_then_the_previous_resumes_exactly(setup, full, tmp_path, how):
    out = tmp_path / "run"
    sac_run.run(cfg_chunks(3), RunOptions(out=str(out), **OPTS), setup=setup, **QUIET)
    ck = out / "checkpoints"
    assert ckpt.all_steps(ck) == [2, 3]
    good = digests(ck / "2")
    damage(ck / "3", how)
    damaged = digests(ck / "3")

    with pytest.raises(ckpt.CheckpointError) as info:
        sac_run.run(CFG, RunOptions(out=str(out), resume=True, **OPTS), setup=setup, **QUIET)
    msg = str(info.value)
    assert "\n" not in msg and "checkpoint 3" in msg and "corrupt" in msg
    assert "--resume-from 2" in msg
    assert ckpt.all_steps(ck) == [2, 3] and digests(ck / "2") == good  # nothing deleted
    assert digests(ck / "3") == damaged

    sac_run.run(CFG, RunOptions(out=str(out), resume_from=2, **OPTS), setup=setup, **QUIET)
    assert_same_run(out, full[1])
    assert digests(ckpt.set_aside_dir(ck) / "3") == damaged  # set aside, not deleted
    for step in ckpt.all_steps(ck):  # every checkpoint on disk verifies and is finite
        ckpt.restore(ck, full[0]["runner"], CFG.fingerprint(), step=step)


def test_a_diverged_state_is_never_saved_and_the_good_checkpoint_stays(setup, tmp_path):
    out = tmp_path / "run"
    poisoned = copy.copy(setup)
    calls = []

    def chunk(runner, params):
        calls.append(1)
        runner, metrics = setup.chunk(runner, params)
        if len(calls) == 2:  # the second chunk diverges
            sac = runner.sac.replace(log_alpha_c=runner.sac.log_alpha_c * np.nan)
            runner = runner.replace(sac=sac)
        return runner, metrics

    poisoned.chunk = chunk
    with pytest.raises(ckpt.NonFiniteStateError) as info:
        sac_run.run(CFG, RunOptions(out=str(out), **OPTS), setup=poisoned, **QUIET)
    msg = str(info.value)
    assert "\n" not in msg and "checkpoint 2" in msg and "log_alpha_c" in msg and "not saved" in msg
    ck = out / "checkpoints"
    assert ckpt.all_steps(ck) == [1]
    tree, _ = ckpt.restore(ck, setup.init(setup.keys, setup.params), CFG.fingerprint())
    assert not ckpt.nonfinite_arrays(tree)


def test_restore_refuses_non_finite_arrays_even_with_matching_checksums(setup, tmp_path):
    """A state that is NaN on disk with consistent integrity data (written by other code)."""
    ck = tmp_path / "checkpoints"
    runner = jax.device_get(setup.init(setup.keys, setup.params))
    ckpt.save(ck, 1, runner, {"config": CFG.fingerprint(), "chunk": 1})
    bad = runner.replace(sac=runner.sac.replace(log_alpha_d=runner.sac.log_alpha_d * np.nan))
    real = ckpt.nonfinite_arrays
    try:
        ckpt.nonfinite_arrays = lambda tree: []  # the other code did not check
        ckpt.save(ck, 2, bad, {"config": CFG.fingerprint(), "chunk": 2})
    finally:
        ckpt.nonfinite_arrays = real
    with pytest.raises(ckpt.CheckpointError, match=r"checkpoint 2 .*NaN/Inf.*log_alpha_d.*--resume-from 1"):
        ckpt.restore(ck, runner, CFG.fingerprint())


# ------------------------------------------------------------------ kills, in a subprocess

DRIVER = """
import os, signal, sys
import jax
from agents.sac import checkpoint as C
from agents.sac import run as R
from agents.sac.config import RunOptions, TrainConfig

out, fields, kill = sys.argv[1], eval(sys.argv[2]), sys.argv[3]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if kill.startswith("chunk"):  # the N-th compiled chunk runs, then the kill, before it returns
    n, real_init = int(kill[5:]), R.Setup.__init__
    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        real, calls = self.chunk, []
        def chunk(runner, params):
            calls.append(1)
            result = jax.block_until_ready(real(runner, params))
            if len(calls) == n:
                die()
            return result
        self.chunk = chunk
    R.Setup.__init__ = init
elif kill.startswith("save"):  # inside orbax's save of checkpoint N: written, not yet renamed
    from orbax.checkpoint._src.path import atomicity
    n, real_fin = kill[4:], atomicity.AtomicRenameTemporaryPath.finalize
    async def finalize(self, *args, **kwargs):
        if self.get_final().name == n:
            die()
        return await real_fin(self, *args, **kwargs)
    atomicity.AtomicRenameTemporaryPath.finalize = finalize
elif kill.startswith("record"):  # checkpoint N committed by orbax, its integrity record not yet
    n, real_rec = kill[6:], C._write_integrity
    def record(step_dir):
        if step_dir.name == n:
            die()
        real_rec(step_dir)
    C._write_integrity = record

R.run(TrainConfig(**fields), RunOptions(out=out, progress=False, media=True, media_top_k=1,
                                        tensorboard=True), log=lambda *a: None)
"""


def train_process(out: Path, kill: str) -> int:
    """Train CFG in a fresh process until ``kill`` (the XLA cache comes through the environment)."""
    fields = dict(FIELDS, total_steps=CFG.total_steps)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(DRIVER), str(out), repr(fields), kill],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(proc.stderr[-3000:])
    return proc.returncode


@pytest.mark.parametrize("kill", ["chunk3", "save3", "record3"])
def test_killed_run_resumes_to_the_uninterrupted_run(setup, full, tmp_path_factory, kill):
    """The kill takes a process of its own; what it leaves on disk is all a resume has, so the
    resume runs here (on this module's compiled setup, like the resumes above) and must end
    exactly where the uninterrupted run ends: same program, same saved state, same rows."""
    out = tmp_path_factory.mktemp(kill)
    assert train_process(out, kill=kill) == -signal.SIGKILL
    ck = out / "checkpoints"
    expected = {"chunk3": [1, 2], "save3": [1, 2], "record3": [1, 2, 3]}[kill]  # record3: no prune yet
    assert ckpt.all_steps(ck) == expected
    sac_run.run(CFG, RunOptions(out=str(out), resume=True, **OPTS), setup=setup, **QUIET)
    assert_same_run(out, full[1])
    assert not [p for p in ck.iterdir() if "tmp" in p.name]  # orbax's unfinished save is gone


def test_truncated_checkpoint_gives_one_clean_line_from_the_cli(full, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(full[1], out)
    damage(out / "checkpoints" / "4", "truncate")
    before = digests(out / "checkpoints")
    args = ["--out", str(out), "--resume", "--no-progress"]
    for name, value in FIELDS.items():
        flag = {"n_heldout": "heldout", "duration_s": "duration"}.get(name, name).replace("_", "-")
        args += [f"--{flag}"] + ([str(v) for v in value] if isinstance(value, tuple) else [str(value)])
    args += ["--total-steps", str(CFG.total_steps)]
    proc = subprocess.run([sys.executable, "-m", "agents.sac_train", *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Event loop is closed" not in proc.stderr, proc.stderr[-2000:]
    assert "checkpoint 4" in lines[0] and "truncated" in lines[0] and "--resume-from 3" in lines[0]
    assert digests(out / "checkpoints") == before


def test_reading_checkpoints_leaves_a_save_in_progress_alone(tmp_path):
    """A policy loaded while the run trains lists and reads checkpoints; only the writer
    removes an unfinished save (the one a kill left, before its next save)."""
    from orbax.checkpoint._src.path.atomicity_types import TMP_DIR_SUFFIX

    ck = tmp_path / "checkpoints"
    ckpt.save(ck, 1, {"a": np.arange(3.0)}, {"chunk": 1})
    in_progress = ck / f"2{TMP_DIR_SUFFIX}1700000000"
    in_progress.mkdir()
    (in_progress / "part").write_text("half written")
    assert ckpt.all_steps(ck) == [1] and ckpt.read_metadata(ck, 1)["chunk"] == 1
    assert in_progress.is_dir()
    ckpt.save(ck, 3, {"a": np.arange(3.0)}, {"chunk": 3})
    assert not in_progress.exists() and ckpt.all_steps(ck) == [1, 3]
