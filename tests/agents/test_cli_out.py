"""``--out`` of ``python -m agents.match`` and ``python -m agents.evaluate``: an unwritable
folder is refused before any work (one line, exit 2); outputs are written per file atomically
inside ``--out`` (normal permissions, nothing hidden left beside it by a kill); the match line
says why fewer renders than budgeted were spent."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from agents import evaluate, match
from agents.evaluation.match_file import MatchJob
from jaxsynth.io import save_audio


def must_not_run(*args, **kwargs):
    raise AssertionError("the work started although --out cannot be written")


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "t.wav"
    save_audio(path, 0.1 * np.ones(2048, np.float32), 22050)
    return str(path)


def bad_outs(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    return [("/proc/x", "cannot write there"), (str(tmp_path / "file.txt"), "is a file"),
            (str(tmp_path / "file.txt" / "out"), "file.txt is a file")]


def test_match_refuses_an_unwritable_out_before_matching(tmp_path, wav, monkeypatch, capsys):
    monkeypatch.setattr(match, "match_file", must_not_run)
    for out, why in bad_outs(tmp_path):
        assert match.main([wav, "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and why in err and out in err


def test_evaluate_refuses_an_unwritable_out_before_evaluating(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(evaluate, "run_evaluation", must_not_run)
    for out, why in bad_outs(tmp_path):
        assert evaluate.main(["--out", out]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err and out in err


KILLED_WRITE = """
import os, signal, sys
import numpy as np
from agents.evaluation import match_file as M
from agents.evaluation.match_file import MatchJob
from jaxsynth import params as P

def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

M.save_audio = killed  # the kill lands after preset.json, while match.wav is being written
os.umask(0o022)
M.write_outputs(MatchJob("t.wav", sys.argv[1]), np.asarray(P.DEFAULT_PARAMS01), None, None, None)
"""


def test_a_kill_while_writing_leaves_nothing_hidden_and_normal_permissions(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_WRITE), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no hidden temporary folder beside it
    assert sorted(os.listdir(out)) == ["preset.json"]  # complete files only, no temp file
    assert oct(os.stat(out).st_mode & 0o777) == oct(0o755)


@pytest.mark.parametrize("trace, budget, method, expected", [
    ([14, 28], 32, "cmaes", "28 of the 32 budgeted renders: cmaes renders in whole batches of "
                            "14 renders (one CMA-ES generation each), and the remaining 4 do not "
                            "make another"),
    ([7, 14, 21, 28], 30, "grad", "28 of the 30 budgeted renders: grad renders in whole batches "
                                  "of 7 renders, and the remaining 2 do not make another"),
    ([16, 32], 32, "cmaes", "32 renders"),
])
def test_renders_line_says_why_the_budget_was_not_spent(trace, budget, method, expected):
    job = MatchJob("t.wav", "out", method=method, budget=budget)
    assert match.renders_spent(np.array(trace), job) == expected
