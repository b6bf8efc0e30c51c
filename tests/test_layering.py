"""The import layering in pyproject.toml ([tool.importlinter]): jaxsynth never imports agents;
agents' shared pieces < env, search < sac < evaluation < the CLIs; no library module imports a
CLI module; no import cycles. ``lint-imports`` checks the contracts; this test runs it."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_kept():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    assert Path(exe).exists(), "lint-imports missing: pip install -e '.[test]' (import-linter)"
    r = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    m = re.search(r"Contracts: (\d+) kept, 0 broken", out)
    assert m and int(m.group(1)) >= 4, out  # the four contracts in pyproject.toml
