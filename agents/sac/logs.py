"""Training logs: scalars to TensorBoard (tensorboardX) and a JSONL file, plus audio A/B
(FLAC) and spectrogram PNGs of held-out matches with a bounded retention policy (the best and
worst few per stage).

Retention: per (stage, kind) at most ``top_k`` media items are kept on disk; for ``best``
the K lowest-loss items survive, for ``worst`` the K highest-loss ones. Each item is at most
``FILES_PER_ITEM`` files, so disk use is bounded by
``n_stages * n_kinds * top_k * FILES_PER_ITEM`` files whatever the run length and however
often it is resumed (tested): the store keeps its index in ``media/index.json`` and, when it
opens, deletes media files the index does not know (written just before a kill).

Resuming: ``rewind_logs`` removes the ``metrics.jsonl`` rows and TensorBoard scalars written
after the checkpoint a run resumes from, so the logs continue without duplicates.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from jaxsynth.io import atomic_write

FILES_PER_ITEM = 3  # target FLAC, match FLAC, spectrogram PNG


def _jsonable(v):
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, (np.integer, int)):
        return int(v)
    return v


def _records(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split a TFRecord file into (raw record, payload); a truncated last record is dropped."""
    out, pos = [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        end = pos + 12 + length + 4
        if end > len(data):
            break
        out.append((data[pos:end], data[pos + 12:pos + 12 + length]))
        pos = end
    return out


def _rewind_events(path: Path, last_step: int) -> int:
    """Drop the TensorBoard events of ``path`` whose step is past ``last_step``."""
    from tensorboardX.proto.event_pb2 import Event

    data = path.read_bytes()
    kept, dropped = [], 0
    records = _records(data)
    for raw, payload in records:
        event = Event()
        try:
            event.ParseFromString(payload)
        except Exception:  # noqa: BLE001 -- a damaged record is dropped like a late one
            dropped += 1
            continue
        if event.step > last_step and event.HasField("summary"):
            dropped += 1
        else:
            kept.append(raw)
    if dropped or sum(map(len, kept)) != len(data):
        atomic_write(path, b"".join(kept))
    return dropped


def _rewind_jsonl(path: Path, last_step: int) -> int:
    """Drop the rows of ``path`` past ``last_step`` (and a half-written last line)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
            if not line.endswith("\n") or int(row["step"]) > last_step:
                continue
        except (ValueError, KeyError, TypeError):
            continue
        kept.append(line)
    if len(kept) != len(lines):
        atomic_write(path, "".join(kept))
    return len(lines) - len(kept)


def rewind_logs(out_dir: str | os.PathLike, last_step: int) -> int:
    """Make the logs in ``out_dir`` end at ``last_step``: rows of ``metrics.jsonl`` and
    TensorBoard scalars written after it (by a run killed after its last checkpoint) are
    removed, so a resumed run continues the logs without duplicates. ``last_step=-1`` clears
    them (a fresh start). Returns how many rows and events were dropped."""
    out_dir = Path(out_dir)
    dropped = 0
    jsonl = out_dir / "metrics.jsonl"
    if jsonl.is_file():
        dropped += _rewind_jsonl(jsonl, last_step)
    tb = out_dir / "tb"
    if tb.is_dir():
        for path in sorted(tb.glob("events.out.tfevents.*")):
            dropped += _rewind_events(path, last_step)
    return dropped


class ScalarLogger:
    """Scalars -> TensorBoard event files and ``metrics.jsonl`` (one JSON object per call)."""

    def __init__(self, out_dir: str | os.PathLike, tensorboard: bool = True):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.out_dir / "metrics.jsonl"
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter
            # A unique suffix: event files are named by the second they were opened, and a
            # resumed run opened within the same second would overwrite the earlier file.
            self._tb = SummaryWriter(str(self.out_dir / "tb"),
                                     filename_suffix=f".{os.getpid()}.{secrets.token_hex(4)}")

    def log(self, step: int, scalars: dict, kind: str = "train") -> None:
        row = {"kind": kind, "step": int(step)}
        for k, v in scalars.items():
            v = np.asarray(v)
            if v.size != 1:
                continue
            row[k] = _jsonable(v.item())
            if self._tb is not None and row[k] is not None:
                self._tb.add_scalar(f"{kind}/{k}", float(v.item()), int(step))
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()

    def flush(self) -> None:
        """Put every row logged so far on disk (TensorBoard queues events in memory)."""
        self._jsonl.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


@dataclass
class MediaItem:
    loss: float
    paths: list  # relative to the store's folder
    tag: str


INDEX = "index.json"


@dataclass
class MediaStore:
    """Keeps at most ``top_k`` media items per (stage, kind) on disk (see module docstring).

    The index of kept items lives in ``out_dir/index.json`` (rewritten atomically after each
    change), so a store opened on the folder of an earlier run (``--resume``) continues its
    ranking instead of starting a second one beside it.
    """

    out_dir: Path
    top_k: int = 3
    items: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        self.out_dir = Path(self.out_dir)
        self._load()

    def _load(self) -> None:
        """Read the index and make the folder agree with it: items whose files are gone are
        forgotten, files no item owns are deleted, and each list is cut to ``top_k``."""
        try:
            rows = json.loads((self.out_dir / INDEX).read_text())["items"]
        except (OSError, ValueError, KeyError, TypeError):
            rows = []
        for row in rows:
            try:
                key = (int(row["stage"]), str(row["kind"]))
                item = MediaItem(float(row["loss"]), [str(p) for p in row["paths"]], str(row["tag"]))
            except (KeyError, TypeError, ValueError):
                continue
            if all((self.out_dir / p).is_file() for p in item.paths):
                self.items.setdefault(key, []).append(item)
        dropped = []
        for (_, kind), cur in self.items.items():
            cur.sort(key=self._keep_order(kind))
            dropped += cur[self.top_k:]
            del cur[self.top_k:]
        owned = {p for cur in self.items.values() for it in cur for p in it.paths}
        for stage_dir in self.out_dir.glob("stage*"):
            for f in stage_dir.glob("*/*"):
                if f.is_file() and f.relative_to(self.out_dir).as_posix() not in owned:
                    f.unlink()
        if rows or dropped:
            self._save_index()

    def _save_index(self) -> None:
        rows = [dict(stage=stage, kind=kind, **asdict(it))
                for (stage, kind), cur in sorted(self.items.items()) for it in cur]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.out_dir / INDEX, json.dumps({"items": rows}, indent=1))

    def _keep_order(self, kind: str):
        return (lambda it: it.loss) if kind == "best" else (lambda it: -it.loss)

    def would_keep(self, stage: int, kind: str, loss: float) -> bool:
        cur = self.items.get((stage, kind), [])
        if len(cur) < self.top_k:
            return True
        worst_kept = sorted(cur, key=self._keep_order(kind))[-1]
        return self._keep_order(kind)(MediaItem(loss, [], "")) < self._keep_order(kind)(worst_kept)

    def add(self, stage: int, kind: str, loss: float, tag: str, writer) -> bool:
        """Write an item with ``writer(directory, stem) -> list of paths`` if it ranks in the
        top K, then delete whatever fell out. An item with the same tag (the same chunk redone
        after a resume) is replaced. Returns True if written."""
        if not self.would_keep(stage, kind, loss):
            return False
        d = self.out_dir / f"stage{stage}" / kind
        d.mkdir(parents=True, exist_ok=True)
        paths = [Path(p).absolute().relative_to(self.out_dir.absolute()).as_posix()
                 for p in writer(d, tag)]
        cur = [it for it in self.items.get((stage, kind), []) if it.tag != tag]
        cur.append(MediaItem(float(loss), paths, tag))
        cur.sort(key=self._keep_order(kind))
        keep, dropped = cur[:self.top_k], cur[self.top_k:]
        self.items[(stage, kind)] = keep
        self._save_index()
        kept = {p for it in keep for p in it.paths}
        for it in dropped:
            for p in it.paths:
                if p not in kept:
                    (self.out_dir / p).unlink(missing_ok=True)
        return True


def write_ab(directory: Path, stem: str, target_audio: np.ndarray, match_audio: np.ndarray,
             sample_rate: int, target_mel_db: np.ndarray, match_mel_db: np.ndarray,
             title: str = "") -> list[Path]:
    """Target and match as FLAC (lossless, ~half of WAV) and the A/B log-mel PNG
    (``agents.plots.ab_figure``)."""
    from agents.plots import ab_figure
    from jaxsynth.io import save_audio

    paths = [directory / f"{stem}_target.flac", directory / f"{stem}_match.flac",
             directory / f"{stem}_logmel.png"]
    save_audio(paths[0], np.asarray(target_audio, np.float32), sample_rate)
    save_audio(paths[1], np.asarray(match_audio, np.float32), sample_rate)
    ab_figure(paths[2], target_mel_db, match_mel_db, title, dpi=80)
    return paths
