"""``render_batch(..., spread=True)`` over several CPU devices (``synth.render_batch_spread``):
one part of the batch per device, the audio back on the first device, the same sounds as one
device renders.

The test process has one CPU device (JAX fixes the count when it starts), so the check runs in
a subprocess started with ``JAX_NUM_CPU_DEVICES=2``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np
from jaxsynth import params as P, synth as S
cfg = S.SynthConfig(duration_s=0.1)
out = {"devices": len(S.local_cpu_devices())}
for b in (5, 300):  # odd (padded to 6) and above CPU_BATCH_CHUNK (chunked inside each device)
    p = P.sample_params01(jax.random.key(b), np.ones(P.N_MODULES, bool), shape=(b,))
    keys = jax.random.split(jax.random.key(1), b)
    note = jnp.linspace(40.0, 80.0, b)
    spread = S.render_batch(p, keys, cfg, note=note, spread=True)
    plain = S.render_batch(p, keys, cfg, note=note)  # spread=False: one device
    full = lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (b,))
    whole = S.render_batch_jit(p, keys, cfg, full(note), full(1.0), full(cfg.default_note_length_s))
    parts = S.render_batch_spread(p, keys, cfg, full(note), full(1.0), full(cfg.default_note_length_s))
    out[str(b)] = dict(shape=list(spread.shape), on=[d.id for d in spread.sharding.device_set],
                       parts_on=sorted(d.id for d in parts.sharding.device_set),
                       plain_on=sorted(d.id for d in plain.sharding.device_set),
                       parts_equal=bool(np.array_equal(np.asarray(parts), np.asarray(spread))),
                       diff=np.max(np.abs(np.asarray(spread) - np.asarray(whole)), axis=1).tolist(),
                       peak=float(np.max(np.abs(np.asarray(whole)))))
print(json.dumps(out))
"""


def test_render_batch_over_two_cpu_devices_equals_one_device():
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="2", JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2
    for b in (5, 300):
        row = out[str(b)]
        assert row["shape"] == [b, 2205] and row["on"] == [0]  # whole batch, back on device 0
        assert row["parts_on"] == [0, 1] and row["parts_equal"]  # rendered on both devices
        assert row["plain_on"] == [0]
        assert row["peak"] > 0.01  # real audio, not silence compared with silence
        # A device renders its part as a smaller batch, which XLA vectorizes differently: the
        # same last-bit differences as a sound alone vs inside a batch, with the same bounds
        # (test_synth.py: every row 5e-4, median 1e-5; a wrong row order or key would be
        # O(0.01-1)).
        diff = np.asarray(row["diff"])
        assert diff.max() < 5e-4, (diff.argmax(), diff.max())
        assert np.median(diff) < 1e-5, np.median(diff)
