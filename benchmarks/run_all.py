"""Run the benchmark suite with one command: RESULTS.md sections, benchmarks/results.json and
a PNG plot of throughput vs batch size.

Runs each benchmark script as a subprocess with this interpreter (so one failing or running
out of memory does not take the others down), each writing its JSON and its RESULTS.md
section(s):

* render_throughput.py: render, render + features, render + features + loss, side by side with
  torchsynth / SynthAX when installed (``pip install -e .[bench]``), floors
  ("## Render throughput", "## Floors");
* features_throughput.py: feature/loss variants incl. bfloat16 ("## Features and losses");
* env_throughput.py: env steps/s by number of envs ("## Environment throughput");
* train_throughput.py: fused vs host-loop SAC training ("## Fusion speed-up (training)");

then merges the JSON into ``results.json`` ({"_suite": {setup}, script: {setup, rows,
returncode, command}}), plots x-realtime (audio seconds per wall second) against batch size
into ``throughput.png`` and writes a headline summary ("## Suite summary") to RESULTS.md. A
script that fails is recorded with its return code and the tail of its output; the others
still run, and run_all exits 1.

    python benchmarks/run_all.py            # full suite (about 1 h on a quiet 2-core CPU)
    python benchmarks/run_all.py --quick    # small sizes: every script in a few minutes
    python benchmarks/run_all.py --smoke --only render_throughput.py   # seconds: plumbing check
    python benchmarks/run_all.py --device-suite [--cpu-reduced]   # device_suite.py: < 8 min
    python benchmarks/run_all.py --from-json render_throughput.py=a.json render_throughput.py=b.json ...
        # no runs: merge the --json files of earlier script runs (rows of one script concatenated)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPTS = ("render_throughput.py", "features_throughput.py", "env_throughput.py", "train_throughput.py")
SUMMARY = "## Suite summary"


SMOKE = {  # seconds per script: what tests/test_benchmarks.py runs
    "render_throughput.py": ["--batches", "2", "--sample-rates", "22050", "--duration-s", "0.1",
                             "--modes", "render", "render+features+loss", "--peers", "none", "--reps", "2"],
    "features_throughput.py": ["--batches", "2", "--variants", "shared-fft", "bf16-fft", "--duration-s", "0.1",
                               "--reps", "2"],
    "env_throughput.py": ["--quick", "--envs", "2", "--duration-s", "0.1"],
    "train_throughput.py": ["--quick"],
}


def suite(size: str) -> dict[str, list[str]]:
    """Script -> its size arguments for ``size`` in full / quick / smoke."""
    if size == "smoke":
        return dict(SMOKE)
    if size == "quick":
        return {name: ["--quick"] for name in SCRIPTS}
    return {
        "render_throughput.py": ["--batches", "1", "64", "256", "1024", "4096", "--sample-rates", "22050",
                                 "44100", "--feature-max-batch", "1024", "--reps", "3"],
        "features_throughput.py": ["--batches", "1", "64", "256", "1024", "--reps", "3"],
        "env_throughput.py": ["--envs", "64", "256", "1024", "4096", "--bank-size", "32"],
        "train_throughput.py": ["--envs", "64", "256", "1024", "--steps", "8", "--reps", "2"],
    }


def run_script(name: str, args: list[str], timeout_s: float, results_md: str | None) -> dict:
    """Run one script; its JSON (setup, rows) plus returncode and command."""
    fd, json_path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    os.remove(json_path)
    extra = ["--json", json_path] + (["--write-results", "--results-md", results_md] if results_md else [])
    cmd = [sys.executable, os.path.join(HERE, name)] + args + extra
    print(f"\n=== python benchmarks/{name} {' '.join(args)}", flush=True)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout_s, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, code = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        code = "timeout"
    print(out[-3000:], flush=True)
    result: dict = {"returncode": code, "command": " ".join(["python", f"benchmarks/{name}"] + args)}
    if os.path.exists(json_path):  # a killed script still leaves the rows it had
        with open(json_path) as f:
            result.update(json.load(f))
        os.remove(json_path)
    if code != 0:
        result["output_tail"] = out[-2000:]
    return result


def collect(specs: list[str]) -> dict:
    """``SCRIPT=PATH`` specs -> {script: {returncode, command, setup, rows, runs}} from the JSON
    files earlier script runs wrote with ``--json``; several files of one script are merged (rows
    concatenated; ``runs`` keeps each file's setup, ``command`` joins their commands)."""
    merged: dict = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or name not in SCRIPTS:
            raise SystemExit(f"--from-json: expected SCRIPT=PATH with SCRIPT one of {SCRIPTS}, got {spec!r}")
        try:
            with open(path) as f:
                data = json.load(f)
            setup, rows = data["setup"], data["rows"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"--from-json: {path} is not a benchmark JSON file ({e})")
        entry = merged.setdefault(name, {"returncode": 0, "runs": [], "rows": []})
        entry["runs"].append(setup)
        entry["rows"].extend(rows)
        entry["setup"] = entry["runs"][0]
        entry["command"] = " ; ".join(r.get("command", "?") for r in entry["runs"])
    return merged


def series(results: dict) -> dict[str, list[tuple[float, float]]]:
    """Label -> sorted [(batch, x realtime)] for the plot."""
    out: dict[str, list[tuple[float, float]]] = {}
    for script, res in results.items():
        if script == "_suite":
            continue
        for r in res.get("rows") or []:
            batch, xrt = r.get("batch"), r.get("x_realtime")
            if batch is None or not isinstance(xrt, (int, float)) or not xrt > 0:
                continue
            if script == "render_throughput.py":
                if r["system"] == "floor" and r["mode"] != "stft-only":
                    continue
                label = f"{r['system']} {r['mode']} @ {r['sample_rate'] / 1000:g} kHz"
            elif script == "features_throughput.py":
                if r["variant"] not in ("shared-fft", "bf16-fft"):
                    continue
                label = f"features+loss {r['variant']}"
            elif script == "env_throughput.py":
                label = "env step (vmap, scan)"
            else:
                label = f"SAC train {r['mode']}"
            out.setdefault(label, []).append((float(batch), float(xrt)))
    return {k: sorted(v) for k, v in out.items()}


def plot(results: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxsynth.io import atomic_path

    fig, ax = plt.subplots(figsize=(10, 6.5))
    colors, markers = plt.get_cmap("tab20").colors, "osD^vP*Xh<>p"
    for i, (label, pts) in enumerate(sorted(series(results).items())):
        style = "--" if label.startswith("floor") else "-"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker=markers[i % len(markers)],
                color=colors[(2 * i) % 20 + (i // 10) % 2], label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size (sounds or envs)")
    ax.set_ylabel("x realtime (audio seconds per wall second)")
    s = results.get("_suite", {}).get("setup") or {}
    ax.set_title(f"jaxsynth throughput - {s.get('device', '')} {s.get('cpu', '')} x{s.get('cores', '')}, "
                 f"jax {s.get('jax', '')}, {s.get('date', '')}, load {s.get('load_avg', '')}\n"
                 + textwrap.fill(s.get("command", ""), 170), fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)


def _fmt(x, spec=",.0f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def summary(results: dict) -> str:
    """Headline figures of this run as Markdown (every number read from the rows)."""
    from benchmarks.common import metadata_lines

    setup = results["_suite"]["setup"]
    if setup.get("size") == "from-json":
        runs = [r for k, v in results.items() if k != "_suite" for r in v.get("runs", [])]
        source = ("merged from earlier script runs (nothing was run by this command; the load "
                  "line below is the merge's, each run's date and load are in its section): "
                  + "; ".join(f"{r.get('date', '?')} `{r.get('command', '?')}` (load {r.get('load_avg', '?')})"
                              for r in runs))
    else:
        source = "from the rows of this run"
    lines = [SUMMARY, "", f"Written by `benchmarks/run_all.py` {source} (details in the "
             "scripts' sections and in benchmarks/results.json; plot: benchmarks/throughput.png).", "",
             metadata_lines(setup, results["_suite"].get("load_avg_end"))]
    status = ", ".join(f"{k} {'ok' if v['returncode'] == 0 else 'FAILED (' + str(v['returncode']) + ')'}"
                       for k, v in results.items() if k != "_suite")
    lines.append(f"Scripts: {status}.\n")
    render = (results.get("render_throughput.py") or {}).get("rows") or []
    by = {(r["system"], r["mode"], r["sample_rate"], r["batch"]): r for r in render}
    rows = sorted({(sr, b) for (sys_, m, sr, b) in by if sys_ == "jaxsynth" and m == "render"})
    if rows:
        lines += ["| sample rate | batch | render x rt | ours / torchsynth | ours / synthax "
                  "| render+features+loss x rt | floor: stft-only x rt |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for sr, b in rows:
            ours = by[("jaxsynth", "render", sr, b)]["x_realtime"]
            ratio = lambda peer: _fmt(ours / by[(peer, "render", sr, b)]["x_realtime"], ".2f") \
                if (peer, "render", sr, b) in by else "-"
            full = by.get(("jaxsynth", "render+features+loss", sr, b), {}).get("x_realtime")
            stft = by.get(("floor", "stft-only", sr, b), {}).get("x_realtime")
            lines.append(f"| {sr} | {b} | {_fmt(ours)} | {ratio('torchsynth')} | {ratio('synthax')} "
                         f"| {_fmt(full)} | {_fmt(stft)} |")
        lines.append("")
    env = (results.get("env_throughput.py") or {}).get("rows") or []
    if env:
        lines += ["| envs | env steps/s | x realtime | load (1 min) |", "| ---: | ---: | ---: | ---: |"]
        lines += [f"| {r['n_envs']} | {_fmt(r['env_steps_per_s'])} | {_fmt(r['x_realtime'])} "
                  f"| {r['load_avg_after'][0]:.2f} |" for r in env]
        lines.append("")
    train = (results.get("train_throughput.py") or {}).get("rows") or []
    fused = {r["n_envs"]: r for r in train if r["mode"] == "fused"}
    if fused:
        lines += ["| envs | fused env steps/s | loop / fused wall | loop-sync / fused wall |",
                  "| ---: | ---: | ---: | ---: |"]
        for n, f in sorted(fused.items()):
            other = {r["mode"]: r["wall_s"] / f["wall_s"] for r in train if r["n_envs"] == n}
            lines.append(f"| {n} | {_fmt(f['env_steps_per_s'])} | {_fmt(other.get('loop'), '.2f')} "
                         f"| {_fmt(other.get('loop-sync'), '.2f')} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: every script in a few minutes")
    parser.add_argument("--smoke", action="store_true",
                        help="the smallest sizes (0.1 s clips, batch 2, no peers): checks the plumbing, "
                             "not the machine; what tests/test_benchmarks.py runs")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these scripts")
    parser.add_argument("--no-write-results", action="store_true", help="leave RESULTS.md alone")
    parser.add_argument("--results-md", default=os.path.join(HERE, "RESULTS.md"))
    parser.add_argument("--out", default=os.path.join(HERE, "results.json"))
    parser.add_argument("--plot", default=os.path.join(HERE, "throughput.png"))
    parser.add_argument("--timeout-s", type=float, default=3 * 3600, help="per script")
    parser.add_argument("--from-json", nargs="+", metavar="SCRIPT=PATH",
                        help="run nothing: merge these --json outputs of earlier script runs")
    parser.add_argument("--device-suite", nargs=argparse.REMAINDER, metavar="ARGS",
                        help="run benchmarks/device_suite.py instead (the rest of the line is its "
                             "arguments, e.g. --device-suite --cpu-reduced)")
    args = parser.parse_args(argv)
    if args.device_suite is not None:
        sys.path.insert(0, ROOT)
        from benchmarks.device_suite import main as device_suite_main
        device_suite_main(args.device_suite)
        return 0

    sys.path.insert(0, ROOT)
    from benchmarks.common import load_avg, metadata, write_json, write_sections

    setup = metadata(sys.argv[1:] if argv is None else argv, "benchmarks/run_all.py")
    size = "smoke" if args.smoke else "quick" if args.quick else "full"
    setup["size"] = size
    results: dict = {"_suite": {"setup": setup, "returncode": 0}}
    results_md = None if args.no_write_results else args.results_md
    if args.from_json:
        setup["size"] = "from-json"
        results.update(collect(args.from_json))
    for name, script_args in ({} if args.from_json else suite(size)).items():
        if args.only and name not in args.only:
            continue
        results[name] = run_script(name, script_args, args.timeout_s, results_md)
        write_json(args.out, results)  # after every script: a killed suite keeps what it had
    results["_suite"]["load_avg_end"] = load_avg()
    write_json(args.out, results)
    plot(results, args.plot)
    if results_md:
        write_sections({SUMMARY: summary(results)}, results_md)
    failed = [n for n, r in results.items() if r["returncode"] != 0]
    print(f"\nwrote {args.out}, {args.plot}" + (f" and {results_md}" if results_md else "")
          + (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
