"""Training checkpoints with orbax: the whole training pytree (params, optimiser states,
temperatures, RNG, stage, step counters, optionally the replay buffer) plus JSON metadata,
with integrity data so that a damaged checkpoint is refused instead of trained on.

Integrity, end to end:
- before a save, every floating-point array must be finite (a diverged state is never saved)
  and the metadata records a SHA-256 per array, computed from the arrays in memory;
- orbax writes the step into a temporary directory and renames it when complete, so a kill
  during a save leaves the previous checkpoint intact; then ``integrity.json`` records the
  size and SHA-256 of every file orbax wrote;
- ``restore`` checks the files against that record *before* orbax reads them (a truncated or
  overwritten file is one clean error, not tensorstore tracebacks), then the metadata
  (format, config fingerprint), the tree structure and shapes, every array's checksum and
  finiteness. Any failure is one ``CheckpointError`` line naming the checkpoint and the
  previous checkpoint whose files verify (``--resume-from STEP``).
- retention (``keep``) runs after a save completed and only removes checkpoints older than
  the ``keep`` newest complete ones, so the newest good checkpoint is never deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxsynth.io import atomic_write, file_sha256

FORMAT = 2  # 2: per-array checksums in the metadata and a per-file integrity record
INTEGRITY_FILE = "integrity.json"
SET_ASIDE_SUFFIX = ".set_aside"  # <checkpoints>.set_aside/: checkpoints passed over by --resume-from


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (missing, corrupt, or from a different config)."""


class NonFiniteStateError(CheckpointError):
    """The training state holds NaN/Inf: it is not saved (nor restored)."""


def _manager(directory: str | os.PathLike, create: bool = True,
             writer: bool = False) -> ocp.CheckpointManager:
    # No orbax retention: ``prune`` deletes only after a newer checkpoint is complete. Only the
    # writer removes unfinished saves (of a killed run): a reader (a policy loaded while the
    # run trains) must not delete the save in progress.
    # Each process acts alone (a multi-process run gathers the state first and process 0
    # writes; every process may read): no orbax barrier waits for processes that do not call.
    me = jax.process_index()
    alone = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    if create:  # orbax cannot create it with active_processes set
        Path(directory).mkdir(parents=True, exist_ok=True)
    opts = ocp.CheckpointManagerOptions(max_to_keep=None, create=False,
                                        cleanup_tmp_directories=writer,
                                        enable_async_checkpointing=False,
                                        multiprocessing_options=alone)
    return ocp.CheckpointManager(Path(directory).absolute(), options=opts)


def _leaves(tree) -> list[tuple[str, np.ndarray]]:
    return [(jax.tree_util.keystr(path), np.asarray(leaf))
            for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(tree))]


def array_checksum(a: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes (C order)."""
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def tree_checksums(tree) -> dict[str, str]:
    """Array path (``jax.tree_util.keystr``) -> ``array_checksum`` for every leaf."""
    return {name: array_checksum(a) for name, a in _leaves(tree)}


def nonfinite_arrays(tree) -> list[str]:
    """Paths of the floating-point leaves that hold NaN or Inf."""
    return [name for name, a in _leaves(tree)
            if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all()]


def _files(step_dir: Path) -> dict[str, Path]:
    return {p.relative_to(step_dir).as_posix(): p for p in sorted(step_dir.rglob("*"))
            if p.is_file() and p.name != INTEGRITY_FILE}


def _write_integrity(step_dir: Path) -> None:
    record = {name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
              for name, p in _files(step_dir).items()}
    atomic_write(step_dir / INTEGRITY_FILE, json.dumps({"files": record}, indent=0))


def file_problem(directory: str | os.PathLike, step: int) -> str | None:
    """What is wrong with checkpoint ``step``'s files (None if they match their record, or if
    no record was written because the run was killed between the save and the record)."""
    step_dir = Path(directory) / str(step)
    record_path = step_dir / INTEGRITY_FILE
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"its integrity record {INTEGRITY_FILE} is unreadable ({type(e).__name__})"
    present = _files(step_dir)
    for name, want in record.items():
        p = present.get(name)
        if p is None:
            return f"file {name} is missing"
        size = p.stat().st_size
        if size != want.get("bytes"):
            return f"file {name} has {size} bytes, {want.get('bytes')} were written (truncated)"
        if file_sha256(p) != want.get("sha256"):
            return f"file {name} does not match its SHA-256 (overwritten or damaged)"
    return None


def all_steps(directory: str | os.PathLike) -> list[int]:
    """Indices of the complete checkpoints in ``directory``, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    try:
        return sorted(int(s) for s in _manager(d, create=False).all_steps())
    except Exception as e:  # noqa: BLE001 -- any unreadable layout is a checkpoint error
        raise CheckpointError(f"cannot list checkpoints in {d}: {e}; delete the directory or pass "
                              "another --out") from e


def latest_step(directory: str | os.PathLike) -> int | None:
    """Index of the newest complete checkpoint in ``directory`` (None if there is none)."""
    steps = all_steps(directory)
    return steps[-1] if steps else None


def previous_verified(directory: str | os.PathLike, before: int) -> int | None:
    """The newest checkpoint older than ``before`` whose files match their integrity record."""
    for step in reversed(all_steps(directory)):
        if step < before and file_problem(directory, step) is None:
            try:
                read_metadata(directory, step)
            except CheckpointError:
                continue
            return step
    return None


def _offer(directory, step: int) -> str:
    prev = previous_verified(directory, step)
    if prev is None:
        return "no earlier checkpoint verifies: start a fresh run with another --out"
    return (f"resume from the previous checkpoint with --resume-from {prev} (checkpoints after it "
            f"are moved to {set_aside_dir(directory)}, nothing is deleted)")


def prune(directory: str | os.PathLike, keep: int) -> list[int]:
    """Delete all but the ``keep`` newest complete checkpoints; returns the deleted steps."""
    steps = all_steps(directory)
    doomed = steps[:-keep] if keep > 0 else []
    for step in doomed:
        shutil.rmtree(Path(directory) / str(step))
    return doomed


def save(directory: str | os.PathLike, step: int, tree: Any, metadata: dict, keep: int = 2) -> None:
    """Save ``tree`` (any pytree of arrays) and ``metadata`` (JSON-able) as checkpoint ``step``,
    then delete all but the ``keep`` newest. Raises ``NonFiniteStateError`` (saving nothing)
    when a floating-point array holds NaN/Inf."""
    tree = jax.device_get(tree)
    bad = nonfinite_arrays(tree)
    if bad:
        raise NonFiniteStateError(
            f"the training state at checkpoint {step} holds NaN/Inf in {len(bad)} array(s) "
            f"(first: {bad[0]}); it was not saved. Training diverged: resume from the last "
            f"checkpoint in {directory} with --resume and a lower --lr or --max-delta")
    meta = dict(metadata, format=FORMAT, step=int(step), checksums=tree_checksums(tree))
    with _manager(directory, writer=True) as m:
        m.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                  meta=ocp.args.JsonSave(meta)), force=True)
        m.wait_until_finished()
    _write_integrity(Path(directory) / str(step))
    prune(directory, keep)


def read_metadata(directory: str | os.PathLike, step: int | None = None) -> dict:
    step = latest_step(directory) if step is None else step
    if step is None:
        raise CheckpointError(f"no checkpoint found in {directory}; start without --resume")
    try:
        with _manager(directory, create=False) as m:
            return dict(m.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {step} in {directory} has unreadable metadata "
                              f"({type(e).__name__}); it is corrupt") from e


def check_metadata(meta: dict, expected: dict, directory) -> None:
    """Raise if ``meta`` was written by a different format or config fingerprint."""
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint in {directory} has format {meta.get('format')!r}, this "
                              f"code reads format {FORMAT}; start a fresh run with another --out")
    diff = {k: (meta.get("config", {}).get(k), v) for k, v in expected.items()
            if meta.get("config", {}).get(k) != v}
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
        raise CheckpointError(f"checkpoint in {directory} was made with a different configuration "
                              f"({lines}); rerun with the same flags or use another --out")


def verify_files(directory: str | os.PathLike, step: int) -> None:
    """Raise a one-line ``CheckpointError`` if checkpoint ``step``'s files are damaged."""
    problem = file_problem(directory, step)
    if problem is not None:
        raise CheckpointError(f"checkpoint {step} in {directory} is corrupt: {problem}; "
                              f"{_offer(directory, step)}")


def restore(directory: str | os.PathLike, like: Any, expected_config: dict,
            step: int | None = None) -> tuple[Any, dict]:
    """Restore the newest (or given) checkpoint into the structure of ``like``. Verifies the
    files against their integrity record first, then the config fingerprint, the tree
    structure, every array's shape, dtype, checksum and finiteness."""
    step = latest_step(directory) if step is None else step
    if step is None:
        raise CheckpointError(f"no checkpoint found in {directory}; start without --resume")
    if step not in all_steps(directory):
        raise CheckpointError(f"no checkpoint {step} in {directory}; the complete ones are "
                              f"{all_steps(directory)}")
    verify_files(directory, step)
    try:
        meta = read_metadata(directory, step)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; {_offer(directory, step)}") from None
    check_metadata(meta, expected_config, directory)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, jax.device_get(like))
    try:
        with _manager(directory, create=False) as m:
            out = m.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        tree = out["state"]
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise CheckpointError(f"checkpoint {step} in {directory} could not be restored "
                              f"({type(e).__name__}: {first}); it is corrupt or from other code; "
                              f"{_offer(directory, step)}") from None
    got = jax.tree_util.tree_structure(tree)
    want = jax.tree_util.tree_structure(like)
    if got != want:
        raise CheckpointError(f"checkpoint {step} in {directory} has a different tree structure; "
                              "use the same flags or another --out")
    for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(like)):
        if np.shape(a) != np.shape(b) or np.asarray(a).dtype != np.asarray(b).dtype:
            raise CheckpointError(f"checkpoint {step} in {directory}: array {np.shape(a)} "
                                  f"{np.asarray(a).dtype} where {np.shape(b)} {np.asarray(b).dtype} "
                                  "was expected; use the same flags or another --out")
    want_sums = meta.get("checksums") or {}
    for name, a in _leaves(tree):
        if want_sums.get(name) != array_checksum(a):
            raise CheckpointError(f"checkpoint {step} in {directory} is corrupt: array {name} does "
                                  f"not match its checksum; {_offer(directory, step)}")
    bad = nonfinite_arrays(tree)
    if bad:
        raise CheckpointError(f"checkpoint {step} in {directory} holds NaN/Inf in {len(bad)} "
                              f"array(s) (first: {bad[0]}); {_offer(directory, step)}")
    return tree, meta


def set_aside_dir(directory: str | os.PathLike) -> Path:
    d = Path(directory).absolute()
    return d.with_name(d.name + SET_ASIDE_SUFFIX)


def set_aside_after(directory: str | os.PathLike, step: int) -> list[int]:
    """Move every checkpoint newer than ``step`` into ````<checkpoints>.set_aside`` (resuming from an older
    one), so new saves never meet them and nothing is deleted. Returns the moved steps."""
    moved = [s for s in all_steps(directory) if s > step]
    if moved:
        aside = set_aside_dir(directory)
        aside.mkdir(exist_ok=True)
        for s in moved:
            dest = aside / str(s)
            n = 1
            while dest.exists():
                dest = aside / f"{s}.{n}"
                n += 1
            os.replace(Path(directory) / str(s), dest)
    return moved


def fingerprint(config_dict: dict) -> dict:
    """JSON-normalised copy of a config dict (tuples -> lists) for comparison with metadata."""
    return json.loads(json.dumps(config_dict, default=str))
