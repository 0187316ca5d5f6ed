"""The book's method pages type the paper's settings in prose and tables;
these tests hold every such value to the profile the runs are built from."""
import re
from pathlib import Path

import pytest

from emkd_lib.profiles import profile_config
from emkd_lib.studies.emkd import ENCODER_SWEEP_USERS, SENSITIVITY_EPOCHS

EMKD_PAGE = Path(__file__).resolve().parents[1] / "book" / "emkd.md"

# row label of the page's table -> the value in a RunConfig, formatted as the page writes it
PAPER_SETTINGS = {
    "hidden size $d$": lambda c: str(c.encoder_config.hidden),
    "transformer blocks": lambda c: str(c.encoder_config.n_blocks),
    "attention heads": lambda c: str(c.encoder_config.n_heads),
    "maximum length $T$": lambda c: str(c.data.max_len),
    "dropout": lambda c: f"{c.encoder_config.dropout:g}",
    "sliding-window step": lambda c: str(c.data.window_step),
    "views $M$": lambda c: str(c.params.n_views),
    "networks $N$": lambda c: str(c.params.n_networks),
    "temperature $\\tau$": lambda c: f"{c.params.tau:.1f}",
    "$\\lambda$ (contrastive weight)": lambda c: f"{c.params.lam:g}",
    "$\\mu$ (distillation weight)": lambda c: f"{c.params.mu:g}",
    "batch size": lambda c: str(c.train.batch_size),
    "optimiser": lambda c: f"Adam, lr $10^{{{round(__import__('math').log10(c.train.lr))}}}$",
    "epochs": lambda c: str(c.train.epochs),
}


def _paper_table() -> dict[str, list[str]]:
    text = EMKD_PAGE.read_text(encoding="utf-8")
    start = text.index("| setting | Beauty | Toys | ML-1M |")
    rows = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_the_emkd_pages_paper_settings_are_the_paper_profiles():
    rows = _paper_table()
    assert set(rows) == set(PAPER_SETTINGS)
    for column, dataset in enumerate(("beauty", "toys", "ml-1m")):
        config = profile_config("paper", dataset, "emkd")
        for label, value in PAPER_SETTINGS.items():
            assert rows[label][column] == value(config), (label, dataset)


def test_the_emkd_pages_cpu_settings_are_the_cpu_profiles():
    text = " ".join(EMKD_PAGE.read_text(encoding="utf-8").split())
    config = profile_config("cpu", "beauty", "emkd")
    assert (f"$d = {config.encoder_config.hidden}$ and $M = {config.params.n_views}$ views; it trains until early "
            f"stopping (patience {config.train.patience} evaluations after {config.train.min_steps:,} steps, a cap "
            f"of {config.train.epochs} epochs)") in text
    assert f"Figure 3 trains every point for {SENSITIVITY_EPOCHS['cpu']} epochs" in text
    assert f"Figure 4 runs on a fixed subsample of {ENCODER_SWEEP_USERS['cpu']:,} Beauty users" in text
    ml_cpu, ml_paper = profile_config("cpu", "ml-1m", "emkd"), profile_config("paper", "ml-1m", "emkd")
    assert (f"on ML-1M it keeps {ml_cpu.encoder_config.n_heads} attention heads where the code uses "
            f"{ml_paper.encoder_config.n_heads}") in text


@pytest.mark.parametrize("needle", [r"\$d = \d+\$", r"\$M = \d+\$"])
def test_the_settings_the_page_types_are_the_ones_checked_here(needle):
    # a new typed value elsewhere on the page would escape the two tests above
    text = " ".join(EMKD_PAGE.read_text(encoding="utf-8").split())
    assert len(re.findall(needle, text)) == 1
