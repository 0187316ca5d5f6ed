import re

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
    assert "font-size" in html and "white-space: normal" in html
    assert html == render_table(table()).to_html()


def test_breaks_lines_inside_a_word_only_for_tokens_too_long_for_a_column():
    from emkd_lib.render import BREAKABLE
    df = pd.DataFrame({"run": ["beauty / sasrec", "toys / emkd"],
                       "commit": ["1369968b0b4a8f41b1d0f6b4c1b2cf2ab3a1e2d7+dirty", "short"]})
    html = render_table(df).to_html()
    # the one cell with a 40-character token, and no other, may break anywhere
    assert html.count(f'class="data row0 col1 {BREAKABLE}"') == 1 and html.count(BREAKABLE) == 2  # cell + rule
    assert "td.emkd-breakable" in html and "overflow-wrap: anywhere" in html
    plain = render_table(table()).to_html()
    td_rule = re.search(r" td \{([^}]*)\}", plain).group(1)   # the rule of every other cell
    assert "text-align: right" in td_rule and "overflow-wrap" not in td_rule


def test_booleans_read_as_yes_and_no_on_the_page_and_as_data_in_the_text():
    df = pd.DataFrame({"run": ["a", "b"], "still rising": [True, False]})
    shown = render_table(df)
    assert ">yes</td>" in shown.to_html() and ">no</td>" in shown.to_html() and "True" not in shown.to_html()
    assert "True" in repr(shown) and "False" in repr(shown)
    counts = render_table(pd.DataFrame({"parameters": [1234567, 256], "name": ["a", "b"]})).to_html()
    assert ">1,234,567</td>" in counts and ">256</td>" in counts


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


def test_bullets_are_one_markdown_list_item_per_line_and_none_gives_the_fallback():
    from emkd_lib.render import render_bullets
    assert render_bullets(["EMKD **+1.0%**.", "SASRec below."]).data == "- EMKD **+1.0%**.\n- SASRec below."
    assert render_bullets(iter(["one"])).data == "- one"
    assert render_bullets([], empty="No count for this dataset.").data == "No count for this dataset."
    assert render_bullets([]).data == ""


def test_nullable_integer_counts_show_missing_as_a_dash():
    df = pd.DataFrame({"users": pd.array([22363, None], dtype="Int64")}, index=["beauty", "ml-100k"])
    html = render_table(df).to_html()
    assert ">22,363<" in html and "–" in html and "&lt;NA&gt;" not in html
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
    counts = pd.DataFrame({"max_users": [2000, 300], "min_steps": [1500, 0]})
    html = render_table(counts, digits=None).to_html()   # a setting's integers are counts
    assert ">2,000<" in html and ">1,500<" in html and ">300<" in html


def test_panel_grid_fits_the_text_column_in_rows_of_at_most_the_given_columns():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pytest
    from emkd_lib.report import TEXT_WIDTH_IN, panel_grid
    fig, axes = panel_grid(5, columns=2, panel_height=2.0)
    assert len(axes) == 5 and len(fig.axes) == 5                  # the sixth cell is removed
    assert tuple(fig.get_size_inches()) == (TEXT_WIDTH_IN, 6.0)   # three rows of two
    left = {round(ax.get_position().x0, 3) for ax in axes}
    assert len(left) == 2
    plt.close(fig)
    fig, axes = panel_grid(1)
    assert len(axes) == 1 and fig.get_size_inches()[0] == TEXT_WIDTH_IN
    plt.close(fig)
    with pytest.raises(ValueError, match="at least one panel"):
        panel_grid(0)


def test_a_method_keeps_its_colour_in_every_panel_and_the_legend_names_every_method():
    """Chapter 05's curves drew each panel with its own colour cycle, so on a
    dataset without ICLRec every later method took the next method's colour
    under a legend drawn from the first panel."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from emkd_lib.report import method_colors, method_legend, panel_grid
    runs = {"beauty": ["SASRec", "ICLRec", "S4Rec"], "sports": ["SASRec", "S4Rec"]}
    colors = method_colors(m for methods in runs.values() for m in methods)
    assert list(colors) == ["SASRec", "ICLRec", "S4Rec"] and len(set(colors.values())) == 3
    fig, axes = panel_grid(2)
    for ax, methods in zip(axes, runs.values()):
        for m in methods:
            ax.plot([0, 1], [0, 1], color=colors[m], label=m)
    assert axes[1].lines[1].get_color() == axes[0].lines[2].get_color() == colors["S4Rec"]
    legend = method_legend(axes[1], colors)
    assert [t.get_text() for t in legend.get_texts()] == ["SASRec", "ICLRec", "S4Rec"]   # ICLRec too, not drawn there
    legend = method_legend(axes[0], colors, styles={"S4Rec": {"marker": ".", "linewidth": 2.2}})
    handles = {h.get_label(): h for h in legend.legend_handles}
    assert handles["S4Rec"].get_marker() == "." and handles["S4Rec"].get_linewidth() == 2.2
    assert handles["SASRec"].get_marker() != "." and handles["SASRec"].get_color() == colors["SASRec"]
    plt.close(fig)


def test_changes_p_values_and_ratios_read_at_their_own_precision_on_the_page():
    df = pd.DataFrame({"NDCG@10": [0.03817, 0.04791], "change %": [10.52114, -20.1213],
                       "p (Wilcoxon)": [0.00031, 0.41492], "ratio": [1.80751, 0.96694],
                       "p S4Rec vs ICLRec": [0.00002, 0.0277]})
    html = render_table(df, digits=4).to_html()
    for shown in ("0.0382", "10.5", "-20.1", "&lt;0.001", "0.415", "1.808", "0.967", "0.028"):
        assert f">{shown}</td>" in html, shown
    assert html.count("&lt;0.001") == 2
    assert "10.5211" not in html and "0.0003" not in html
    assert "10.5211" in repr(render_table(df, digits=4))   # the text nbval compares keeps its digits
    near = render_table(pd.DataFrame({"p": [0.00981, 0.0104, 0.00951]}), digits=4).to_html()
    for shown in ("0.0098", "0.010", "0.0095"):   # under 0.01 never reads as 0.010
        assert f">{shown}</td>" in near, shown
    counts = pd.DataFrame({"value": [22363.0, 8.876, 100.5], "training (s)": [3351.3863, 12.0, 0.4]})
    html = render_table(counts, digits=3).to_html()
    for shown in ("22,363", "8.876", "100.500", "3,351", "12", "0"):
        assert f">{shown}</td>" in html, shown


def test_counts_in_int_and_whole_float_columns_share_thousands_separators():
    df = pd.DataFrame({"training (s)": [2688, 999], "peak (MB)": [5575.0, 812.0], "epochs": [12, 7]})
    html = render_table(df, digits=3).to_html()
    for shown in ("2,688", "5,575", "999", "812", "12"):
        assert f">{shown}</td>" in html, shown
    assert ">2688<" not in html


def test_whole_number_columns_drop_decimals_and_short_hyphenated_labels_stay_on_one_line():
    df = pd.DataFrame({"median length": [4.0, 68.0], "NDCG@10": [0.5, 0.25]}, index=["beauty", "ml-100k"])
    html = render_table(df, digits=3).to_html()
    assert ">4</td>" in html and ">68</td>" in html and ">0.500</td>" in html
    exact = pd.DataFrame({"ratio": [2.0, 3.0], "change %": [0.0, 100.0], "p (t)": [1.0, 1.0]})
    exact_html = render_table(exact, digits=3).to_html()
    for shown in ("2.000", "3.000", "0.0", "100.0", "1.000"):     # read at their own precision, not as counts
        assert f">{shown}</td>" in exact_html, shown
    assert "ml\u2011100k" in html and "ml-100k" not in html                  # a non-breaking hyphen
    assert "ml-100k" in repr(render_table(df, digits=3))                    # the text form is untouched
    long_label = "code: positives-in-one-logsumexp"
    assert long_label in render_table(pd.DataFrame({"x": [1.5]}, index=[long_label])).to_html()


def test_every_verdict_has_a_colour_and_every_colour_a_verdict():
    from emkd_lib.render import VERDICT_STYLES
    from emkd_lib.report import VERDICTS

    assert set(VERDICT_STYLES) == set(VERDICTS)
