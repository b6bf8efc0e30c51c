"""benchmarks/run_all.py end to end at its smoke size: one command writes the JSON, the
RESULTS.md sections and the PNG plot, with sane contents.

Runs the render and features scripts (0.1 s clips, batch 2; the env and SAC scripts need
minutes of XLA compilation even at their smallest and are exercised by their own --quick runs,
see benchmarks/RESULTS.md) into a temporary directory, so the real RESULTS.md is untouched.
Measured cost: ~20 s on a quiet 2-core CPU.
"""

from __future__ import annotations

import json
import os

import matplotlib.image as mpimg
import pytest

from benchmarks import common, run_all

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    md = tmp / "RESULTS.md"
    # start from a copy holding a section that is not ours: it must survive untouched
    md.write_text("# Benchmark results\n\n## Somebody else's section\n\nkeep me 42\n")
    out, png = tmp / "results.json", tmp / "throughput.png"
    code = run_all.main(["--smoke", "--only", "render_throughput.py", "features_throughput.py",
                         "--results-md", str(md), "--out", str(out), "--plot", str(png)])
    return code, json.loads(out.read_text()), md.read_text(), png


def test_run_all_succeeds_and_records_the_setup(suite_run):
    code, results, _, _ = suite_run
    assert code == 0, {k: v.get("output_tail") for k, v in results.items() if k != "_suite"}
    setup = results["_suite"]["setup"]
    for field in ("device", "jax", "jaxlib", "date", "command", "load_avg", "cores"):
        assert setup[field] not in (None, "", []), field
    assert setup["command"].startswith("python benchmarks/run_all.py --smoke")
    assert setup["size"] == "smoke"
    for name in ("render_throughput.py", "features_throughput.py"):
        res = results[name]
        assert res["returncode"] == 0
        assert res["command"].startswith(f"python benchmarks/{name}")
        assert res["setup"]["jax"] == setup["jax"] and res["setup"]["date"]


def test_throughputs_are_positive_and_consistent(suite_run):
    _, results, _, _ = suite_run
    render = results["render_throughput.py"]["rows"]
    modes = {(r["system"], r["mode"]) for r in render}
    assert {("jaxsynth", "render"), ("jaxsynth", "render+features+loss"), ("floor", "stft-only")} <= modes
    for r in render:
        assert r["batch"] == 2 and r["sample_rate"] == 22050 and r["duration_s"] == 0.1
        assert r["step_s"] > 0 and r["compile_s"] >= 0
        # x realtime is audio seconds per wall second: batch * duration / step time
        assert r["x_realtime"] == pytest.approx(2 * 0.1 / r["step_s"], rel=1e-9)
        assert r["samples_per_s"] == pytest.approx(2 * 2205 / r["step_s"], rel=1e-9)
    feats = results["features_throughput.py"]["rows"]
    assert {r["variant"] for r in feats} == {"shared-fft", "bf16-fft"}
    assert all(r["x_realtime"] > 0 and r["clips_per_s"] > 0 for r in feats)
    bf16 = next(r for r in feats if r["variant"] == "bf16-fft")
    # bfloat16 keeps 8 significant bits: each loss term within a few % of float32, not exact
    for name, (median, worst) in bf16["rel_err"].items():
        assert 0 <= median <= worst, name
    assert bf16["rel_err"]["total"][1] < 0.05
    # loudness stays float32: the bfloat16 program sums the same float32 K-weighted energies in
    # another order at most (relative rounding ~sqrt(frames) * 2**-24 < 1e-5), where a bfloat16
    # loudness would be off by ~2**-9 = 2e-3
    assert bf16["rel_err"]["loudness_lu"][1] < 1e-5


def test_markdown_sections_written_and_others_kept(suite_run):
    _, results, md, _ = suite_run
    for title in ("## Render throughput", "## Floors", "## Features and losses", run_all.SUMMARY):
        assert md.count(title + "\n") == 1, title
    assert "## Somebody else's section\n\nkeep me 42" in md
    summary = md[md.index(run_all.SUMMARY):]
    row = next(r for r in results["render_throughput.py"]["rows"]
               if r["system"] == "jaxsynth" and r["mode"] == "render")
    assert f"| 22050 | 2 | {row['x_realtime']:,.0f} |" in summary
    assert results["_suite"]["setup"]["command"] in summary


def test_plot_is_a_png_with_the_series(suite_run):
    _, results, _, png = suite_run
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(png)
    assert img.shape[0] > 300 and img.shape[1] > 300 and img.std() > 0.01  # not blank
    labels = run_all.series(results)
    assert "jaxsynth render @ 22.05 kHz" in labels and "features+loss bf16-fft" in labels


def test_write_sections_replaces_only_its_own(tmp_path):
    path = tmp_path / "R.md"
    path.write_text("# T\n\n## A\n\nold a\n\n## B\n\nold b\n")
    common.write_sections({"## A": "## A\n\nnew a", "## C": "## C\n\nnew c"}, str(path))
    assert path.read_text() == "# T\n\n## A\n\nnew a\n\n## B\n\nold b\n\n## C\n\nnew c\n"


def test_from_json_merges_earlier_runs_without_running(suite_run, tmp_path):
    """--from-json builds results.json, the plot and the summary from scripts' --json files:
    two files of one script are concatenated, nothing is run, bad specs fail with a message."""
    _, results, _, _ = suite_run
    render = {k: results["render_throughput.py"][k] for k in ("setup", "rows")}
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text(json.dumps(render))
    out, png, md = tmp_path / "r.json", tmp_path / "p.png", tmp_path / "R.md"
    code = run_all.main(["--from-json", f"render_throughput.py={tmp_path / 'a.json'}",
                         f"render_throughput.py={tmp_path / 'b.json'}",
                         "--out", str(out), "--plot", str(png), "--results-md", str(md)])
    merged = json.loads(out.read_text())
    assert code == 0 and set(merged) == {"_suite", "render_throughput.py"}
    assert merged["_suite"]["setup"]["size"] == "from-json"
    assert merged["render_throughput.py"]["rows"] == render["rows"] * 2
    assert len(merged["render_throughput.py"]["runs"]) == 2 and png.stat().st_size > 0
    assert run_all.SUMMARY in md.read_text()
    with pytest.raises(SystemExit, match="SCRIPT=PATH"):
        run_all.main(["--from-json", "nope.py=x.json", "--out", str(out), "--plot", str(png)])
    with pytest.raises(SystemExit, match="not a benchmark JSON"):
        run_all.main(["--from-json", f"render_throughput.py={md}", "--out", str(out), "--plot", str(png)])
