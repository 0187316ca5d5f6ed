"""Figures sized for the book's page.

The text column is about 670 px wide and Jupyter draws figures at 100 dpi, so
a figure wider than ``TEXT_WIDTH_IN`` inches is scaled down to fit, and its
text with it: five 3-inch panels side by side show 10 pt labels at 4 pt.
``panel_grid`` lays panels out in rows of at most ``columns`` within the
text width instead (the browser check, ``scripts/browser_check.py``, reports a
figure shown below 70% of its size).
"""
from __future__ import annotations

import math
from pathlib import Path

from .. import settings as settings_module
from ..files import atomic_write

TEXT_WIDTH_IN = 6.6


def panel_grid(n: int, columns: int = 2, panel_height: float = 2.6, width: float = TEXT_WIDTH_IN,
               **subplots_kw):
    """A figure of ``n`` panels in rows of at most ``columns``, ``width``
    inches wide (the text column by default), each row ``panel_height``
    inches tall. Returns ``(fig, axes)`` with ``axes`` a flat list of ``n``
    axes in reading order; the unused cells of the last row are removed.
    Extra keyword arguments go to ``plt.subplots`` (``sharey=True``, ...)."""
    import matplotlib.pyplot as plt
    if n < 1:
        raise ValueError(f"a figure needs at least one panel, not {n}")
    columns = min(columns, n)
    rows = math.ceil(n / columns)
    fig, grid = plt.subplots(rows, columns, figsize=(width, panel_height * rows), squeeze=False,
                             layout="constrained", **subplots_kw)
    axes = list(grid.flat)
    for ax in axes[n:]:
        ax.remove()
    return fig, axes[:n]


def save_figure(fig, name: str) -> Path:
    """Save a figure beside the notebooks (PNG, 150 dpi) and return its path.

    ``$EMKD_FIGURES_DIR`` redirects figures (the smoke test writes to a scratch
    folder, so it never touches the committed ones).
    """
    path = settings_module.current().figures_dir / f"{name}.png"
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=150, bbox_inches="tight"))
    return path


def method_colors(labels) -> dict[str, str]:
    """``label -> colour`` from matplotlib's colour cycle, in the order the
    labels first appear, so that a method keeps one colour in every panel of
    a figure: a panel's own cycle would shift the colours wherever a method
    is missing from it (a run not trained yet on that dataset)."""
    import matplotlib.pyplot as plt
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {label: cycle[i % len(cycle)] for i, label in enumerate(dict.fromkeys(labels))}


def method_legend(ax, colors: dict[str, str], styles: dict[str, dict] | None = None, **legend_kw):
    """A legend on ``ax`` naming every method of ``method_colors``, drawn or
    not on that panel; ``styles`` gives a method's other line settings
    (``{"EMKD": {"marker": ".", "linewidth": 2.2}}``) where it is drawn
    apart."""
    from matplotlib.lines import Line2D
    styles = styles or {}
    return ax.legend(handles=[Line2D([], [], color=c, label=label, **styles.get(label, {}))
                              for label, c in colors.items()], **legend_kw)
