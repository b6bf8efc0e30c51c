"""agents/sac/logs.py: scalar logs rewound to a checkpoint's step on resume (no duplicate
metrics.jsonl rows or TensorBoard scalars), media retention bounded across resumes."""

import json

import numpy as np

from agents.sac import logs as L
from agents.sac.logs import FILES_PER_ITEM, MediaStore, ScalarLogger
from shared_helpers import tb_scalars





def log_steps(out, steps):
    lg = ScalarLogger(out)
    for s in steps:
        lg.log(s, {"a": float(s), "b": 2.0 * s})
    lg.close()


def test_rewind_then_continue_gives_each_step_once(tmp_path):
    log_steps(tmp_path, range(1, 11))  # checkpoint at step 6, killed after step 10
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 11, "a"')  # the kill cut a row in half
    dropped = L.rewind_logs(tmp_path, 6)
    assert dropped == 5 + 4 * 2  # 5 rows (one half-written) and 4 steps x 2 scalars
    log_steps(tmp_path, range(7, 13))  # the resumed run
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    scalars = tb_scalars(tmp_path)
    assert sorted(scalars) == sorted(set(scalars))
    assert sorted(s for t, s in scalars if t == "train/a") == list(range(1, 13))


def test_rewind_to_minus_one_clears_and_missing_logs_are_fine(tmp_path):
    assert L.rewind_logs(tmp_path, 5) == 0
    log_steps(tmp_path, [0, 1])
    L.rewind_logs(tmp_path, -1)
    assert (tmp_path / "metrics.jsonl").read_text() == ""
    assert tb_scalars(tmp_path) == []


def writer(d, stem):
    paths = [d / f"{stem}_{j}.txt" for j in range(FILES_PER_ITEM)]
    for p in paths:
        p.write_text("x")
    return paths


def media_files(d):
    return sorted(p for p in d.rglob("*") if p.is_file() and p.name != L.INDEX)


def test_media_bound_holds_across_resumes(tmp_path):
    rng = np.random.default_rng(1)
    losses = []
    for run in range(6):  # a run and five resumes, each a new store on the same folder
        store = MediaStore(tmp_path, top_k=1)
        for chunk in range(3):
            for kind in ("best", "worst"):
                loss = float(rng.uniform())
                losses.append((kind, loss))
                store.add(0, kind, loss, f"r{run}c{chunk}", writer)
        assert len(media_files(tmp_path)) == 2 * 1 * FILES_PER_ITEM
    store = MediaStore(tmp_path, top_k=1)
    assert store.items[(0, "best")][0].loss == min(l for k, l in losses if k == "best")
    assert store.items[(0, "worst")][0].loss == max(l for k, l in losses if k == "worst")


def test_media_written_before_a_kill_but_not_indexed_is_removed(tmp_path):
    store = MediaStore(tmp_path, top_k=1)
    store.add(0, "best", 0.5, "c0", writer)
    writer(tmp_path / "stage0" / "best", "c1")  # files of an item the kill kept from the index
    MediaStore(tmp_path, top_k=1)
    assert [p.name for p in media_files(tmp_path)] == [f"c0_{j}.txt" for j in range(FILES_PER_ITEM)]


def test_a_redone_chunk_replaces_its_item(tmp_path):
    store = MediaStore(tmp_path, top_k=2)
    store.add(0, "best", 0.5, "c3", writer)
    MediaStore(tmp_path, top_k=2).add(0, "best", 0.5, "c3", writer)
    assert [it.tag for it in MediaStore(tmp_path, top_k=2).items[(0, "best")]] == ["c3"]
    assert len(media_files(tmp_path)) == FILES_PER_ITEM
