"""Training checkpoints with orbax: the whole training pytree (params, optimiser states,
temperatures, RNG, stage, step counters, optionally the replay buffer) plus JSON metadata.

orbax writes each step into a temporary directory and renames it when complete, so a kill
during a save leaves the previous checkpoint intact. ``restore`` checks the metadata (format,
config fingerprint) and the tree structure/shapes before returning, and every failure becomes
a ``CheckpointError`` naming the directory and what to do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (missing, corrupt, or from a different config)."""


def _manager(directory: str | os.PathLike, keep: int = 2, create: bool = True) -> ocp.CheckpointManager:
    opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create,
                                        enable_async_checkpointing=False)
    return ocp.CheckpointManager(Path(directory).absolute(), options=opts)


def latest_step(directory: str | os.PathLike) -> int | None:
    """Index of the newest complete checkpoint in ``directory`` (None if there is none)."""
    d = Path(directory)
    if not d.is_dir():
        return None
    try:
        return _manager(d, create=False).latest_step()
    except Exception as e:  # noqa: BLE001 -- any unreadable layout is a checkpoint error
        raise CheckpointError(f"cannot list checkpoints in {d}: {e}; delete the directory or pass "
                              "another --out") from e


def save(directory: str | os.PathLike, step: int, tree: Any, metadata: dict, keep: int = 2) -> None:
    """Save ``tree`` (any pytree of arrays) and ``metadata`` (JSON-able) as checkpoint ``step``."""
    meta = dict(metadata, format=FORMAT, step=int(step))
    tree = jax.device_get(tree)
    with _manager(directory, keep) as m:
        m.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                  meta=ocp.args.JsonSave(meta)), force=True)
        m.wait_until_finished()


def read_metadata(directory: str | os.PathLike, step: int | None = None) -> dict:
    step = latest_step(directory) if step is None else step
    if step is None:
        raise CheckpointError(f"no checkpoint found in {directory}; start without --resume")
    try:
        with _manager(directory, create=False) as m:
            return dict(m.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {step} in {directory} has unreadable metadata ({e}); "
                              "it is corrupt: delete it or pass another --out") from e


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


def restore(directory: str | os.PathLike, like: Any, expected_config: dict,
            step: int | None = None) -> tuple[Any, dict]:
    """Restore the newest (or given) checkpoint into the structure of ``like``; validates the
    config fingerprint, the tree structure and every array's shape and dtype."""
    step = latest_step(directory) if step is None else step
    if step is None:
        raise CheckpointError(f"no checkpoint found in {directory}; start without --resume")
    meta = read_metadata(directory, step)
    check_metadata(meta, expected_config, directory)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, jax.device_get(like))
    try:
        with _manager(directory, create=False) as m:
            out = m.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        tree = out["state"]
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {step} in {directory} could not be restored ({type(e).__name__}: "
                              f"{str(e)[:300]}); it is corrupt or from other code: delete it or pass "
                              "another --out") from e
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
    return tree, meta


def fingerprint(config_dict: dict) -> dict:
    """JSON-normalised copy of a config dict (tuples -> lists) for comparison with metadata."""
    return json.loads(json.dumps(config_dict, default=str))
