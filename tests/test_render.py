import numpy as np
import pandas as pd

from emkd_lib.render import render_table


def table():
    return pd.DataFrame({"method": ["sasrec", "bert4rec"], "NDCG@10": [0.123456, np.nan],
                         "empty": [np.nan, np.nan], "epochs": [12, 7]})


def test_nan_only_columns_are_dropped():
    html = render_table(table()).to_html()
    assert "empty" not in html
    assert "NDCG@10" in html and "epochs" in html


def test_floats_are_formatted_ints_untouched_nan_is_a_dash():
    html = render_table(table(), digits=3).to_html()
    assert "0.123<" in html and "0.123456" not in html
    assert ">12<" in html and ">12.000<" not in html
    assert "–" in html and "nan" not in html


def test_default_index_hidden_named_index_kept_caption_shown():
    html = render_table(table(), caption="Table 3, ours").to_html()
    assert "Table 3, ours" in html
    assert "class=\"row_heading" not in html  # the 0, 1 index is gone
    named = render_table(table().set_index("method")).to_html()
    assert "row_heading" in named and "sasrec" in named
    assert "th.row_heading" in named and "max-width: 20em" in named  # row labels get more room than headers


def test_fits_the_page_and_is_deterministic():
    html = render_table(table()).to_html()
    assert "font-size" in html and "white-space: normal" in html and "overflow-wrap: anywhere" in html
    assert html == render_table(table()).to_html()


def test_multiindex_columns_render():
    df = table().set_index("method")[["NDCG@10", "epochs"]]
    df.columns = pd.MultiIndex.from_tuples([("beauty", "NDCG@10"), ("beauty", "epochs")])
    html = render_table(df).to_html()
    assert "beauty" in html and "0.1235" in html


def test_repr_is_the_deterministic_fixed_width_text():
    from emkd_lib.report import format_table
    t = render_table(table().set_index("method"), digits=3)
    assert repr(t) == repr(render_table(table().set_index("method"), digits=3))
    assert repr(t) == format_table(table().set_index("method").drop(columns="empty"), digits=3)
    assert "0x" not in repr(t) and "Styler" not in repr(t) and "empty" not in repr(t)
    assert "0.123" in repr(t) and "-" in repr(t)
    assert repr(render_table(table(), caption="Table 3")).startswith("Table 3\n")


def test_html_has_no_memory_address_and_is_what_jupyter_shows():
    import re
    t = render_table(table())
    html = t._repr_html_()
    assert html == t.to_html() and "<table" in html
    assert not re.search(r"0x[0-9a-f]{6,}", html)
    from IPython.core.formatters import DisplayFormatter
    data, _ = DisplayFormatter().format(t)
    assert data["text/plain"] == repr(t) and data["text/html"] == html


def test_sentence_is_markdown_with_its_text_as_plain_text():
    from IPython.core.formatters import DisplayFormatter
    from emkd_lib.render import render_sentence
    data, _ = DisplayFormatter().format(render_sentence("EMKD vs SASRec: **+1.0%**"))
    assert data["text/markdown"] == "EMKD vs SASRec: **+1.0%**"
    assert data["text/plain"] == "EMKD vs SASRec: **+1.0%**"


def test_nullable_integer_counts_show_missing_as_a_dash():
    df = pd.DataFrame({"users": pd.array([22363, None], dtype="Int64")}, index=["beauty", "ml-100k"])
    html = render_table(df).to_html()
    assert ">22363<" in html and "–" in html and "&lt;NA&gt;" not in html
    assert "<NA>" not in repr(render_table(df))


def test_bold_marks_the_best_per_column_or_row_in_html_only():
    from emkd_lib.render import best_cells
    df = pd.DataFrame({"a": [0.1, 0.3, np.nan], "b": [0.5, 0.2, 0.4], "n": [1, 2, 3]}, index=["x", "y", "z"])
    by_column = best_cells(df, "column")
    assert by_column.loc["y", "a"] and by_column.loc["x", "b"] and by_column.sum().sum() == 2
    by_row = best_cells(df, "row")
    assert by_row.loc["x", "b"] and by_row.loc["y", "a"] and not by_row.loc["z"].any()  # z has one value only
    assert best_cells(df, "column", lower_is_better=("b",)).loc["y", "b"]
    plain, bolded = render_table(df), render_table(df, bold="column")
    assert "font-weight: bold" in bolded.to_html() and "font-weight: bold" not in plain.to_html()
    assert repr(plain) == repr(bolded)


def test_cell_style_colours_verdicts_and_collapsed_wraps_in_details():
    from emkd_lib.render import verdict_style
    df = pd.DataFrame({"ours": [0.1, np.nan], "verdict": ["reproduced", "not run yet"]})
    shown = render_table(df, cell_style=verdict_style)
    html = shown.to_html()
    assert "#d4edda" in html and "#e9ecef" in html
    assert repr(shown) == repr(render_table(df))
    assert shown.to_html() == html  # deterministic
    folded = render_table(df, collapsed="Provenance <3 runs>")
    assert folded.to_html().startswith('<details class="emkd-collapsed"><summary>Provenance &lt;3 runs&gt;</summary>')
    assert folded.to_html().rstrip().endswith("</details>")
    assert repr(folded) == repr(render_table(df))


def test_settings_keep_their_values_with_digits_none():
    # digits=0 once rendered dropout 0.2 and 0.5 both as "0": settings need their own form.
    settings = pd.DataFrame({"dropout": [0.2, 0.5], "lr": [0.001, 0.0005], "batch_size": [256, 512]},
                            index=pd.Index(["SASRec", "S4Rec"], name="method"))
    t = render_table(settings, digits=None)
    html = t.to_html()
    for text in (">0.2<", ">0.5<", ">0.001<", ">0.0005<", ">256<", ">512<"):
        assert text in html
    assert "0.2" in repr(t) and "0.0005" in repr(t) and "0.200" not in repr(t)
    assert ">0<" in render_table(settings, digits=0).to_html()  # what the fix replaces
