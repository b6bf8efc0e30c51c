"""THE A/B spectrogram figure: target and match log-mel side by side (one colour scale), with
the loss terms as bars when they are given. Used by the match CLI (``ab.png``) and the
training run's media (``*_logmel.png``)."""

from __future__ import annotations

import os

import numpy as np

from jaxsynth.io import atomic_path
from jaxsynth.losses import LossTerms


def ab_figure(path: str | os.PathLike, target_log_mel, match_log_mel, title: str = "",
              terms: LossTerms | None = None, dpi: int = 100) -> None:
    """Write the A/B figure to ``path`` (PNG, atomically). ``terms``: the match's loss terms
    (scalars, or arrays whose first entry is taken) shown as a bar chart."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if terms is not None else 2
    ratios = [1, 1, 0.8][:panels]
    fig, ax = plt.subplots(1, panels, figsize=(4.3 * panels, 3.6), gridspec_kw={"width_ratios": ratios})
    lo = float(min(np.min(target_log_mel), np.min(match_log_mel)))
    hi = float(max(np.max(target_log_mel), np.max(match_log_mel)))
    for a, m, name in ((ax[0], target_log_mel, "target"), (ax[1], match_log_mel, "match")):
        im = a.imshow(np.asarray(m).T, origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma")
        a.set_title(f"{name} log-mel (dB)")
        a.set_xlabel("frame")
        a.set_ylabel("mel band")
    fig.colorbar(im, ax=ax[1])
    if terms is not None:
        names = list(LossTerms._fields)
        vals = [float(np.ravel(np.asarray(getattr(terms, f)))[0]) for f in names]
        ax[2].barh(names, vals, color="tab:blue")
        for i, v in enumerate(vals):
            ax[2].text(v, i, f" {v:.3g}", va="center", fontsize=8)
        ax[2].set_title("loss terms (match vs target)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
