"""benchmarks/pitch_real_matching.py without matching: the per-note error (an unpitched reading
counts as 1,200 cents, as in the harness), the choice of notes (listed plus a random sample), the
folder of symlinks ``wav_set`` reads, and the per-instrument breakdown of two CSVs."""

from __future__ import annotations

import csv
import os
import numpy as np
import pytest

from benchmarks import pitch_real_matching as R

FIELDS = ["file", "instrument", "family", "soundfont", "split", "midi_note", "played_hz", "target_f0_hz",
          "match_f0_hz", "target_err_c", "match_err_c", "render_note", "total", "log_mel_l1"]


def test_errors_cents_counts_unpitched_as_an_octave():
    err = R.errors_cents([440.0, 880.0, np.nan, 466.1638], [440.0, 440.0, 440.0, 440.0])
    np.testing.assert_allclose(err, [0.0, 1200.0, 1200.0, 100.0], atol=1e-3)


def test_choose_files_keeps_the_listed_and_samples_the_rest():
    rows = [{"file": f"n{i}.wav"} for i in range(10)]
    assert R.choose_files(rows, [], 0, 0) == sorted(r["file"] for r in rows)
    got = R.choose_files(rows, ["n3.wav"], 4, 1)
    assert "n3.wav" in got and len(got) == 5 and got == sorted(got)
    assert got == R.choose_files(rows, ["n3.wav"], 4, 1)  # same seed, same notes
    with pytest.raises(ValueError, match="not in notes.csv"):
        R.choose_files(rows, ["missing.wav"], 0, 0)


def test_link_subset_writes_links_and_their_rows(tmp_path):
    src = tmp_path / "set"
    src.mkdir()
    with open(src / "notes.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "midi_note", "f0_hz"])
        for i in range(3):
            (src / f"a{i}.wav").write_bytes(b"x")
            w.writerow([f"a{i}.wav", 60 + i, 261.6])
    out = R.link_subset(str(src), ["a0.wav", "a2.wav"], [], str(tmp_path / "sub"))
    assert sorted(os.listdir(out)) == ["a0.wav", "a2.wav", "notes.csv"]
    assert os.path.islink(os.path.join(out, "a0.wav"))
    with open(os.path.join(out, "notes.csv"), newline="") as fh:
        assert [r["file"] for r in csv.DictReader(fh)] == ["a0.wav", "a2.wav"]


def _write(path, errs):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        for i, (est, got) in enumerate(errs):
            w.writerow(dict(file=f"sf__organ__n{i}.wav", instrument="organ", family="organ", soundfont="sf",
                            split="dev", midi_note=48 + 12 * (i % 3), played_hz=1.0, target_f0_hz=1.0,
                            match_f0_hz=1.0, target_err_c=est, match_err_c=got, render_note=60, total=1.0,
                            log_mel_l1=10.0))


def test_breakdown_separates_estimator_and_match_misses(tmp_path, capsys):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _write(a, [(1200, 1200), (3, 1200), (4, 5)])
    _write(b, [(1200, 1200), (3, 2), (4, 900)])
    R.breakdown([str(a), str(b)])
    out = capsys.readouterr().out
    assert "run0: 2 off (66.7 %): 1 also off for the estimator, 1 only the match" in out
    assert "run1: 2 off (66.7 %): 1 also off for the estimator, 1 only the match" in out
    assert "sf__organ__n1.wav" in out and "sf__organ__n2.wav" in out and "sf__organ__n0.wav" not in out


def test_level_step_options_set_the_pitch_first_config():
    """``--pitched-scales``, ``--pitched-slack`` (a float or 'none') and ``--no-pitched-floor`` of
    both pitch benchmarks reach ``PitchFirstConfig``; without them it is the config's default."""
    import argparse

    from agents.search.pitch_first import PitchFirstConfig
    from benchmarks.pitch_matching import add_level_step_options, level_step_config

    ap = argparse.ArgumentParser()
    add_level_step_options(ap)
    default = PitchFirstConfig(method="yin")
    assert level_step_config(default, ap.parse_args([])) == default
    got = level_step_config(default, ap.parse_args(["--pitched-scales", "0.8,0.4", "--pitched-slack", "0.2",
                                                    "--no-pitched-floor"]))
    assert (got.pitched_scales, got.pitched_slack, got.pitched_floor) == ((0.8, 0.4), 0.2, False)
    none = level_step_config(got, ap.parse_args(["--pitched-scales", "", "--pitched-slack", "None"]))
    assert none.pitched_scales == () and none.pitched_slack is None and none.pitched_floor is False
    with pytest.raises(ValueError):
        level_step_config(default, ap.parse_args(["--pitched-slack", "-1"]))
