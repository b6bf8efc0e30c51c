"""Run the benchmark suite and collect it: benchmarks/results.json and a PNG plot.

Runs each benchmark script that exists, as a subprocess with this interpreter, asking each for
JSON and (with --write-results) for its RESULTS.md section:

* render_throughput.py (render, render + features, render + features + loss, peers, floors)
* features_throughput.py (feature/loss variants; Markdown only, its table is parsed back)
* env_throughput.py, train_throughput.py (when present: written by other parts of the project)

then merges every JSON into ``benchmarks/results.json`` ({script: {setup, rows, returncode}})
and plots x-realtime (audio seconds per second) against batch size to
``benchmarks/throughput.png``. A script that fails is recorded with its return code and the
tail of its output; the others still run.

    python benchmarks/run_all.py              # full suite (long on a 2-core CPU)
    python benchmarks/run_all.py --quick      # small batches: a smoke run in a few minutes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def suite(quick: bool, write_results: bool) -> dict[str, list[str]]:
    """Script -> extra arguments; '{json}' is replaced by a temp file path."""
    w = ["--write-results"] if write_results else []
    render = ["--quick"] if quick else []
    env = ["--envs", "1", "64"] if quick else []
    feats = ["--batches", "1", "64", "--variants", "shared-fft", "--reps", "3"] if quick else []
    return {
        "render_throughput.py": render + ["--json", "{json}"] + w,
        "features_throughput.py": feats + (["--append-results"] if write_results else []),
        "env_throughput.py": env + ["--json", "{json}"] + w,
        "train_throughput.py": (["--quick"] if quick else []) + ["--json", "{json}"] + w,
    }


def run_script(name: str, args: list[str], timeout_s: float) -> dict:
    path = os.path.join(HERE, name)
    fd, json_path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    os.remove(json_path)
    cmd = [sys.executable, path] + [a.replace("{json}", json_path) for a in args]
    print(f"\n=== {' '.join(cmd[1:])}", flush=True)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout_s, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, code = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as e:
        out, code = (e.stdout or "") if isinstance(e.stdout, str) else "", "timeout"
    print(out[-4000:], flush=True)
    result: dict = {"returncode": code, "command": " ".join(["python", os.path.relpath(path, ROOT)] + args)}
    if os.path.exists(json_path):
        with open(json_path) as f:
            data = json.load(f)
        os.remove(json_path)
        result.update(data if isinstance(data, dict) else {"rows": data})
    elif name == "features_throughput.py":
        result["rows"] = parse_markdown_rows(out)
    if code != 0:
        result["output_tail"] = out[-2000:]
    return result


def parse_markdown_rows(text: str) -> list[dict]:
    """Rows of the first Markdown table in ``text`` as dicts (numbers parsed)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    if len(lines) < 3:
        return []
    head = [h.strip() for h in lines[0].strip("|").split("|")]
    rows = []
    for ln in lines[2:]:
        cells = [c.strip().replace(",", "") for c in ln.strip("|").split("|")]
        if len(cells) != len(head):
            continue
        row = {}
        for h, c in zip(head, cells):
            try:
                row[h] = float(c)
            except ValueError:
                row[h] = c
        rows.append(row)
    return rows


def series(results: dict) -> dict[str, list[tuple[float, float]]]:
    """Label -> [(batch, x realtime)] for the plot, from every script's rows."""
    out: dict[str, list[tuple[float, float]]] = {}
    for script, res in results.items():
        for r in res.get("rows", []) or [] if script != "_suite" else []:
            if not isinstance(r, dict):
                continue
            batch = r.get("batch", r.get("n_envs", r.get("envs")))
            xrt = r.get("x_realtime", r.get("x realtime"))
            if batch is None or xrt is None or isinstance(xrt, str):
                continue
            if script == "render_throughput.py":
                label = f"{r['system']} {r['mode']} @ {r['sample_rate'] / 1000:g} kHz"
            elif script == "features_throughput.py":
                label = f"features {r.get('variant', '')}"
            else:
                label = f"{script.replace('_throughput.py', '')} {r.get('variant', r.get('mode', ''))}".strip()
            out.setdefault(label, []).append((float(batch), float(xrt)))
    return out


def plot(results: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    for label, pts in sorted(series(results).items()):
        if label.startswith("floor"):
            continue
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size (sounds or envs)")
    ax.set_ylabel("x realtime (audio seconds per wall second)")
    setup = results.get("_suite", {}).get("setup") or {}
    ax.set_title(f"jaxsynth throughput — {setup.get('device', '')} jax {setup.get('jax', '')} "
                 f"{setup.get('date', '')}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small batches: a smoke run")
    parser.add_argument("--no-write-results", action="store_true",
                        help="do not rewrite the scripts' sections of RESULTS.md")
    parser.add_argument("--only", nargs="+", help="run only these scripts (file names)")
    parser.add_argument("--timeout-s", type=float, default=3 * 3600, help="per script")
    parser.add_argument("--out", default=os.path.join(HERE, "results.json"))
    parser.add_argument("--plot", default=os.path.join(HERE, "throughput.png"))
    args = parser.parse_args(argv)

    sys.path.insert(0, ROOT)
    from benchmarks.common import metadata

    results: dict = {"_suite": {"setup": metadata(sys.argv[1:] if argv is None else argv,
                                                  "benchmarks/run_all.py"), "returncode": 0}}
    for name, script_args in suite(args.quick, not args.no_write_results).items():
        if args.only and name not in args.only:
            continue
        if not os.path.exists(os.path.join(HERE, name)):
            print(f"(skipping {name}: not present)")
            continue
        results[name] = run_script(name, script_args, args.timeout_s)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2)
    os.replace(tmp, args.out)
    plot(results, args.plot)
    failed = [n for n, r in results.items() if r["returncode"] != 0]
    print(f"\nwrote {args.out} and {args.plot}" + (f"; FAILED: {failed}" if failed else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
