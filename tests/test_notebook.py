"""The differentiable-matching notebook runs top to bottom, so it cannot rot.

``test_notebook_executes_in_fast_setting`` executes ``notebooks/differentiable_matching.ipynb``
with nbclient in its reduced CI setting (``JAXSYNTH_NOTEBOOK_FAST=1``: fewer landscape points,
a 64-render budget, one held-out target). It fails on any cell error, and then checks what the
notebook promises: the gradient match improves on its start, the figures and the A/B audio
exist, and the landscape statistics its text relies on still hold (a discrete parameter has an
all-zero gradient; along the cutoff and the level, -grad points toward the target).
``test_saved_notebook_holds_a_full_run`` checks that the committed file carries the outputs of
a full (non-fast) run, without errors, at a size GitHub renders.

Cost: ~82 CPU-seconds for this file (pytest + kernel; measured 2026-11-25 on the 2-core CPU,
wall 163 s at load average ~10 from other jobs), most of it XLA compiling ``value_and_grad`` of
render + analyze + loss once; on a quiet 2-core machine the wall time is about the CPU time.
"""

from __future__ import annotations

import json
import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "differentiable_matching.ipynb"
MARKER = "NOTEBOOK_RESULTS "


def _outputs(nb, kind: str):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == kind]


def _results(nb) -> dict:
    """The JSON summary the notebook's last cell prints after its own asserts."""
    for o in _outputs(nb, "stream"):
        for line in o.get("text", "").splitlines():
            if line.startswith(MARKER):
                return json.loads(line[len(MARKER):])
    raise AssertionError(f"no line starting with {MARKER!r} in the notebook's outputs")


def _count_media(nb) -> tuple[int, int]:
    """(PNG figures, <audio> players) among the outputs."""
    shown = _outputs(nb, "display_data") + _outputs(nb, "execute_result")
    pngs = sum("image/png" in o.get("data", {}) for o in shown)
    audios = sum("<audio" in o.get("data", {}).get("text/html", "") for o in shown)
    return pngs, audios


@pytest.fixture(scope="module")
def executed_fast():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:  # execute from a clean state, not the saved full-run outputs
        if cell.cell_type == "code":
            cell.outputs = []
    env = dict(os.environ, JAXSYNTH_NOTEBOOK_FAST="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute(env=env)  # raises CellExecutionError (with the traceback) on any cell error
    return nb


def test_notebook_executes_in_fast_setting(executed_fast):
    results = _results(executed_fast)
    assert results["fast"] is True
    assert results["settings"]["n_targets"] == len(results["matching"]) == 1
    for m in results["matching"]:
        assert m["gd_best"] < m["gd_start"], m
        assert m["cma_best"] > 0.0 and m["gd_best"] > 0.0  # nothing degenerate (targets differ from defaults)

    pngs, audios = _count_media(executed_fast)
    assert pngs >= 3, "expected the landscape, loss-curve and spectrogram figures"
    assert audios >= 4, "expected the reference clip plus target / Adam / CMA-ES A/B audio"

    land = results["landscape"]
    # coarse tune is snapped to a semitone grid: jax.grad must be exactly zero everywhere
    assert land["osc1.coarse_st"]["nonzero"] == 0.0
    # the smooth single-basin parameters: -grad points home at most grid points
    for name in ("filter.cutoff_hz", "osc1.level"):
        assert land[name]["home"] >= 0.75, (name, land[name])


def test_saved_notebook_holds_a_full_run():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not _outputs(nb, "error"), "the saved notebook contains an error output"
    results = _results(nb)
    assert results["fast"] is False, "save the notebook from a full run (JAXSYNTH_NOTEBOOK_FAST unset)"
    assert len(results["matching"]) == results["settings"]["n_targets"] >= 2
    pngs, audios = _count_media(nb)
    assert pngs >= 2 + results["settings"]["n_targets"]
    assert audios >= 1 + 3 * results["settings"]["n_targets"]
    size_mb = NOTEBOOK.stat().st_size / 2**20
    assert size_mb < 3.0, f"notebook is {size_mb:.1f} MiB; lower the figure dpi or shorten audio"
