"""HTML tables for the book's pages.

``report.format_table`` gives fixed-width text, which is right for nbval
checks but reads badly in the book: it does not wrap, so a wide table runs off
the page. ``render_table`` gives a pandas ``Styler`` instead, which Jupyter and
Jupyter Book show as an HTML table that fits the page.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

# Small type and wrapping headers keep a dozen metric columns inside the
# book's text width; long cells (method names) may still wrap.
TABLE_STYLES = [
    {"selector": "", "props": "font-size: 0.8em; border-collapse: collapse; max-width: 100%;"},
    {"selector": "th", "props": "white-space: normal; overflow-wrap: anywhere; max-width: 9em;"
                                " text-align: center; vertical-align: bottom; padding: 0.2em 0.4em;"},
    {"selector": "td", "props": "text-align: right; padding: 0.2em 0.4em; font-variant-numeric: tabular-nums;"},
    {"selector": "caption", "props": "caption-side: top; text-align: left; font-style: italic;"},
]


def render_table(df: pd.DataFrame, digits: int = 4, caption: str | None = None) -> Styler:
    """A table ready for a book page.

    Parameters
    ----------
    df : pandas.DataFrame
        The table; its index is shown only when it carries information (a
        default 0, 1, 2, ... index is hidden).
    digits : int
        Decimals for floating-point cells; integers and text are left as
        they are, missing values show as an en dash.
    caption : str, optional
        Shown above the table.

    Returns
    -------
    pandas.io.formats.style.Styler
        Displays as HTML in a notebook (and so in the book); ``.to_html()``
        gives the markup.

    Notes
    -----
    Columns with no value at all are dropped: they only widen the table.
    The Styler's id is derived from the table's content, so re-executing a
    notebook gives byte-identical output.
    """
    df = df.dropna(axis=1, how="all")
    content = df.to_csv() + (caption or "") + str(digits)
    styler = Styler(df, uuid=hashlib.sha1(content.encode()).hexdigest()[:10],
                    cell_ids=False, caption=caption)
    floats = [c for c in df.columns if pd.api.types.is_float_dtype(df[c])]
    styler = styler.format(lambda x: "–" if pd.isna(x) else f"{x:.{digits}f}", subset=floats)
    # Non-float columns can still hold NaN (object columns, e.g. a label left empty).
    others = [c for c in df.columns if c not in floats]
    if others:
        styler = styler.format(lambda x: "–" if _is_missing(x) else x, subset=others)
    if isinstance(df.index, pd.RangeIndex):
        styler = styler.hide(axis="index")
    return styler.set_table_styles(TABLE_STYLES).set_table_attributes('class="emkd-table"')


def _is_missing(x) -> bool:
    return x is None or (isinstance(x, float) and np.isnan(x))
