"""Training logs: scalars to TensorBoard (tensorboardX) and a JSONL file, plus audio A/B
(FLAC) and spectrogram PNGs of held-out matches with a bounded retention policy (Q5).

Retention: per (stage, kind) at most ``top_k`` media items are kept on disk; for ``best``
the K lowest-loss items survive, for ``worst`` the K highest-loss ones. Each item is at most
``FILES_PER_ITEM`` files, so disk use is bounded by
``n_stages * n_kinds * top_k * FILES_PER_ITEM`` files whatever the run length (tested).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FILES_PER_ITEM = 3  # target FLAC, match FLAC, spectrogram PNG


def _jsonable(v):
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, (np.integer, int)):
        return int(v)
    return v


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
            self._tb = SummaryWriter(str(self.out_dir / "tb"))

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

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


@dataclass
class MediaItem:
    loss: float
    paths: list
    tag: str


@dataclass
class MediaStore:
    """Keeps at most ``top_k`` media items per (stage, kind) on disk (see module docstring)."""

    out_dir: Path
    top_k: int = 3
    items: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        self.out_dir = Path(self.out_dir)

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
        top K, then delete whatever fell out. Returns True if written."""
        if not self.would_keep(stage, kind, loss):
            return False
        d = self.out_dir / f"stage{stage}" / kind
        d.mkdir(parents=True, exist_ok=True)
        paths = list(writer(d, tag))
        cur = self.items.setdefault((stage, kind), [])
        cur.append(MediaItem(float(loss), paths, tag))
        cur.sort(key=self._keep_order(kind))
        for dropped in cur[self.top_k:]:
            for p in dropped.paths:
                Path(p).unlink(missing_ok=True)
        del cur[self.top_k:]
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
