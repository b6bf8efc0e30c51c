"""agents/plots.py, the one A/B figure: a PNG with and without the loss-term bars, written
atomically (no temporary file left), replacing an older figure."""

import os

import numpy as np

from agents.plots import ab_figure
from jaxsynth.losses import LossTerms

PNG = b"\x89PNG\r\n\x1a\n"


def test_ab_figure_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    target, match = rng.normal(-40, 10, (20, 16)), rng.normal(-40, 10, (20, 16))
    p = tmp_path / "ab.png"
    ab_figure(p, target, match, "title")
    assert p.read_bytes()[:8] == PNG
    plain = p.stat().st_size
    terms = LossTerms(*[np.float32(0.1 * (i + 1)) for i in range(len(LossTerms._fields))])
    ab_figure(p, target, match, "title", terms=terms)  # replaces it, with a third panel
    assert p.read_bytes()[:8] == PNG and p.stat().st_size != plain
    # loss terms as arrays (a matcher's per-target result): the first entry is shown
    terms_b = LossTerms(*[np.full(3, 0.5, np.float32) for _ in LossTerms._fields])
    ab_figure(tmp_path / "b.png", target, match, terms=terms_b)
    assert sorted(os.listdir(tmp_path)) == ["ab.png", "b.png"]
