"""Plain helpers shared by several test files (test signals, a TensorBoard event reader);
importable because pytest puts tests/ on sys.path for tests/conftest.py."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def sine(freq_hz, seconds, amp=0.5, sr=22050):
    """A float32 sine of ``freq_hz`` lasting ``seconds``."""
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def harmonic(f0_hz, seconds=0.5, n=8, sr=22050):
    """``n`` harmonics of ``f0_hz`` with 1/k amplitudes (a band-limited saw), float32."""
    t = np.arange(int(round(seconds * sr))) / sr
    x = sum(np.sin(2 * np.pi * k * f0_hz * t) / k for k in range(1, n + 1))
    return (0.3 * x).astype(np.float32)


def tb_scalars(out: Path) -> list[tuple]:
    """(tag, step) of every scalar in the TensorBoard event files of ``out``."""
    from tensorboardX.proto.event_pb2 import Event

    found = []
    for path in sorted((Path(out) / "tb").glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            e = Event()
            e.ParseFromString(data[pos + 12:pos + 12 + n])
            found += [(v.tag, e.step) for v in e.summary.value]
            pos += 16 + n
    return found
