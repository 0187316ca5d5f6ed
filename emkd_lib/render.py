"""HTML tables for the book's pages.

``report.format_table`` gives fixed-width text, which is right for nbval
checks but reads badly in the book: it does not wrap, so a wide table runs off
the page. ``render_table`` gives a :class:`Table`: Jupyter and Jupyter Book
show its HTML (a styled pandas ``Styler`` that fits the page), while its
``text/plain`` form, the one nbval compares, is ``format_table``'s
fixed-width text. A bare ``Styler``'s text form is ``<Styler at 0x...>``,
which changes with every run.

``render_sentence`` does the same for a conclusion computed from the stored
numbers: Markdown on the page, the plain sentence for nbval.
"""
from __future__ import annotations

import hashlib
from html import escape

import numpy as np
import pandas as pd
from IPython.display import Markdown
from pandas.io.formats.style import Styler

# The class of a cell holding a token too long to fit a column (LONG_TOKEN
# characters without a space: a commit, a run key), which may break anywhere.
BREAKABLE = "emkd-breakable"
LONG_TOKEN = 16
# Labels up to this many characters never break at a hyphen.
SHORT_LABEL = 8

# Small type and headers wrapping between words keep a dozen metric columns
# inside the book's text width. Lines break between words only: a header split
# inside a word reads as a typo, so a table that does not fit needs shorter
# labels or fewer columns (the browser check reports one wider than its box).
TABLE_STYLES = [
    {"selector": "", "props": "font-size: 0.8em; border-collapse: collapse; max-width: 100%;"},
    {"selector": "th", "props": "white-space: normal; max-width: 9em;"
                                " text-align: center; vertical-align: bottom; padding: 0.2em 0.4em;"},
    # Row labels (variant names, "code: <switch> = <value>") read better wide and left-aligned than in 9em.
    {"selector": "th.row_heading", "props": "max-width: 20em; text-align: left; vertical-align: top;"},
    {"selector": "td", "props": "text-align: right; padding: 0.2em 0.4em; font-variant-numeric: tabular-nums;"},
    # A commit hash or a run key has no word to break at: it may break anywhere rather than widen the table.
    {"selector": f"td.{BREAKABLE}", "props": "overflow-wrap: anywhere;"},
    {"selector": "caption", "props": "caption-side: top; text-align: left; font-style: italic;"},
]


class Table:
    """A table as the book shows it: HTML in a notebook or on a page
    (``_repr_html_``), deterministic fixed-width text as its ``repr``.

    ``styler`` is the underlying pandas ``Styler``, ``data`` the table shown
    (NaN-only columns already dropped).
    """

    def __init__(self, data: pd.DataFrame, styler: Styler, digits: int | None, caption: str | None,
                 collapsed: str | None = None):
        self.data, self.styler, self.digits, self.caption = data, styler, digits, caption
        self.collapsed = collapsed

    def to_html(self) -> str:
        html = self.styler.to_html()
        if self.collapsed is not None:
            # A closed <details>: the reader sees one line and may open it (provenance tables).
            html = (f'<details class="emkd-collapsed"><summary>{escape(self.collapsed)}</summary>\n'
                    f"{html}</details>\n")
        return html

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        from .report import format_table  # report imports render: avoid the cycle at import time
        text = format_table(self.data, digits=self.digits)
        return f"{self.caption}\n{text}" if self.caption else text

    __str__ = __repr__


class Sentence(Markdown):
    """A sentence computed from the results: Markdown on the page, the sentence
    itself as ``text/plain`` (IPython's default would be an object repr)."""

    def __repr__(self) -> str:
        return self.data

    def _repr_pretty_(self, p, cycle):
        p.text(self.data)


def render_sentence(text: str) -> Sentence:
    """``text`` (Markdown) ready to display as prose in a chapter."""
    return Sentence(text)


def render_bullets(lines, empty: str = "") -> Sentence:
    """``lines`` (Markdown sentences) as a bulleted list; ``empty`` where
    there is none (a list of no items would be a blank on the page)."""
    lines = list(lines)
    return Sentence("\n".join(f"- {line}" for line in lines) if lines else empty)


BOLD = "font-weight: bold;"
# Verdict colours of the scorecard (report.VERDICTS): light backgrounds, dark text, readable in print.
VERDICT_STYLES = {"reproduced": "background-color: #d4edda; color: #155724;",
                  "below the paper": "background-color: #f8d7da; color: #721c24;",
                  "above the paper": "background-color: #fff3cd; color: #856404;",
                  "not run yet": "background-color: #e9ecef; color: #495057;",
                  "not in the paper": "background-color: #e9ecef; color: #495057;"}


def verdict_style(value, row, column) -> str | None:
    """A ``cell_style`` for ``render_table``: colours a ``verdict`` column's cells."""
    return VERDICT_STYLES.get(value) if column == "verdict" else None


def best_cells(df: pd.DataFrame, axis: str, subset=None, lower_is_better=()) -> pd.DataFrame:
    """Boolean frame: True where a cell is the best of its column
    (``axis="column"``) or of its row (``axis="row"``) among the numeric
    ``subset`` of columns (default: all float columns). Higher is better
    except in ``lower_is_better`` columns; ties are all marked; a column or
    row with fewer than two values marks nothing."""
    if axis not in ("row", "column"):
        raise ValueError(f"axis must be 'row' or 'column', not {axis!r}")
    columns = [c for c in (subset if subset is not None else df.columns)
               if c in df.columns and pd.api.types.is_float_dtype(df[c])]
    out = pd.DataFrame(False, index=df.index, columns=df.columns)
    if not columns:
        return out
    values = df[columns].astype(float)
    if axis == "column":
        for c in columns:
            v = -values[c] if c in lower_is_better else values[c]
            if v.notna().sum() > 1:
                out[c] = (v == v.max()) & v.notna()
    else:
        for i in range(len(df)):
            v = values.iloc[i]
            if v.notna().sum() > 1:
                out.iloc[i, [df.columns.get_loc(c) for c in columns]] = ((v == v.max()) & v.notna()).to_numpy()
    return out


def float_text(x: float, digits: int | None) -> str:
    """A float cell's text: ``digits`` decimals, or with ``digits=None`` the
    shortest form that keeps its value (settings such as dropout 0.2 or a
    learning rate 0.001, which a fixed number of decimals would round away)."""
    if digits is None:
        return f"{x:g}"
    return f"{x:.{digits}f}"


def render_table(df: pd.DataFrame, digits: int | None = 4, caption: str | None = None, *, bold: str | None = None,
                 bold_subset=None, lower_is_better=(), cell_style=None, collapsed: str | None = None) -> Table:
    """A table ready for a book page.

    Parameters
    ----------
    df : pandas.DataFrame
        The table; its index is shown only when it carries information (a
        default 0, 1, 2, ... index is hidden).
    digits : int or None
        Decimals for floating-point cells (None: each as written, for
        tables of settings), except where the column's label says what it
        holds: a change in percent, a p-value or a ratio (``_column_text``);
        integers and text are left as they are, booleans read yes/no,
        missing values show as an en dash.
    caption : str, optional
        Shown above the table.
    bold : {"row", "column"}, optional
        Set the best value of each row or column in bold (``best_cells``),
        among the float columns of ``bold_subset`` (default all); higher is
        better except in ``lower_is_better``.
    cell_style : callable, optional
        ``cell_style(value, row label, column label)`` -> CSS for that cell
        or None (e.g. ``verdict_style``).
    collapsed : str, optional
        Wrap the table in a closed ``<details>`` whose summary line is this
        text (provenance tables).

    Returns
    -------
    Table
        Displays as HTML in a notebook (and so in the book); ``.to_html()``
        gives the markup, ``repr()`` the fixed-width text (``report.format_table``)
        that nbval compares; bold, colours and collapsing change only the HTML.

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
    for c in floats:
        values = df[c].dropna()
        # a column of whole numbers (a median length, a count read as float) reads without decimals
        whole = len(values) > 0 and bool(np.isfinite(values).all()) and bool((values == values.round()).all())
        text = _column_text(c, digits, whole)
        styler = styler.format(lambda x, text=text: "–" if pd.isna(x) else text(x), subset=[c])
    # Non-float columns can still hold NaN (object columns, e.g. a label left empty).
    others = [c for c in df.columns if c not in floats]
    if others:
        styler = styler.format(_other_text, subset=others)
        long_tokens = pd.DataFrame("", index=df.index, columns=df.columns)
        for c in others:
            long_tokens[c] = [BREAKABLE if _has_long_token(x) else "" for x in df[c]]
        if (long_tokens != "").to_numpy().any():
            styler = styler.set_td_classes(long_tokens)
    if isinstance(df.index, pd.RangeIndex):
        styler = styler.hide(axis="index")
    # A short label ("ml-1m", "ml-100k") stays on one line: its hyphens do not break.
    for axis in ("index", "columns"):
        styler = styler.format_index(_unbroken_label, axis=axis)
    styles = pd.DataFrame("", index=df.index, columns=df.columns)
    if bold is not None:
        styles = styles.mask(best_cells(df, bold, bold_subset, lower_is_better), BOLD)
    if cell_style is not None:
        for i, label in enumerate(df.index):
            for j, column in enumerate(df.columns):
                css = cell_style(df.iat[i, j], label, column)
                if css:
                    styles.iat[i, j] += css
    if (styles != "").to_numpy().any():
        styler = styler.apply(lambda _: styles, axis=None)
    styler = styler.set_table_styles(TABLE_STYLES).set_table_attributes('class="emkd-table"')
    return Table(df, styler, digits, caption, collapsed)


def _p_value_text(p: float) -> str:
    # The Styler writes cell text into the HTML unescaped.
    if p < 0.001:
        return "&lt;0.001"
    text = f"{p:.3f}"
    # a p just under the 0.01 the book tests at must not read as 0.010
    return f"{p:.4f}" if (p < 0.01) != (float(text) < 0.01) else text


def _column_text(column, digits: int | None, whole: bool = False):
    """How a float column's cells read on the page: by what the column holds,
    judged from its label (the last level of a MultiIndex column): a change in
    percent ("... %") to one decimal, a p-value ("p", "p (...)", "p vs ...", "p A vs B ...") as
    three decimals or "<0.001", a ratio ("ratio ...") to three decimals (a
    verdict's 10% tolerance must be readable off it: 0.897 is below; a
    ratio of exactly 1 still reads 1.000), seconds ("... (s)") as whole
    seconds, any other to ``digits`` (a whole number of 100 or more, a
    count, without decimals; a column of ``whole`` numbers all without
    decimals). Settings tables (``digits=None``) keep every value as written."""
    label = str(column[-1] if isinstance(column, tuple) else column)
    if digits is None:
        return lambda x: float_text(x, None)
    if label.endswith("%"):
        return lambda x: f"{x:.1f}"
    if label == "p" or label.startswith("p "):
        return _p_value_text
    if label.startswith("ratio"):
        return lambda x: f"{x:.3f}"
    if label.endswith("(s)") or "(s," in label or "seconds" in label:
        return lambda x: f"{x:,.0f}"
    if whole:
        return lambda x: f"{x:,.0f}"
    # a count among averages (users 22363 beside actions per user 8.9) reads as the whole number it is
    return lambda x: f"{x:,.0f}" if abs(x) >= 100 and float(x).is_integer() else float_text(x, digits)


def _other_text(x) -> str:
    """A non-float cell's text on the page: an en dash for a missing value,
    yes/no for a boolean (True/False reads as code), a count of 1,000 or
    more with thousands separators (parameters, users, seconds; in settings
    tables too, where integers are counts: users, steps, epochs), as a
    whole-valued float column shows them."""
    if _is_missing(x):
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)) and abs(x) >= 1_000:
        return f"{x:,}"
    return x


def _unbroken_label(label):
    if isinstance(label, str) and len(label) <= SHORT_LABEL and "-" in label:
        return label.replace("-", "\u2011")   # the non-breaking hyphen
    return label


def _has_long_token(x) -> bool:
    return isinstance(x, str) and any(len(token) > LONG_TOKEN for token in x.split())


def _is_missing(x) -> bool:
    # None, NaN and pandas' NA (nullable integer columns, e.g. counts a dataset lacks)
    return x is None or x is pd.NA or (isinstance(x, float) and np.isnan(x))
