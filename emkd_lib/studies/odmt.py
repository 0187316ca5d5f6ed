"""The ODMT chapter's grids: Table 2 (ODMT beside ID-only and multi-modal
baselines), Table 3 (ablations) and Table 4 (temperature T and ramp-up
alpha), as ``label -> RunConfig`` dicts, on the two datasets with item
content that the mirror has, under ODMT's protocol (``*-odmt``: users with
more than five interactions, their 15 most recent).

Every method runs in its profile's settings (``profiles.profile_config``),
so a run of these grids is the run ``python -m emkd_lib run`` trains.
"""
from __future__ import annotations

import pandas as pd

from ..data import load_dataset
from ..data.features import has_images
from ..data.stats import dataset_statistics
from ..methods.odmt import TABLE3_ABLATIONS, ODMTParams, rampup_weight
from ..paper_tables import quoted_table
from ..profiles import profile_config
from ..report.tables import method_label
from .patience import patience_check_lines, with_patience_checks  # noqa: F401  (chapter 08 calls them from here)

# ml-100k-odmt has ID, text and posters; beauty-odmt ID and titles.
DATASETS = ("ml-100k-odmt", "beauty-odmt")
# Table 2's columns that the library has (UniSRec, pre-trained on other domains, is not built).
METHODS = ("gru4rec", "nextitnet", "sasrec", "fdsa", "sasrec-ef", "sasrec-lf", "odmt")
PAPER_TABLE2_COLUMNS = {"gru4rec": "GRU4Rec", "nextitnet": "NextItNet", "sasrec": "SASRec", "fdsa": "FDSA",
                        "sasrec-ef": "SASRec+EF", "sasrec-lf": "SASRec+LF", "odmt": "ODMT"}
# Table 4: one of T and alpha changed at a time, the other at its default.
TABLE4 = {"temperature": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6), "rampup_epochs": (10, 20, 30, 40, 50, 60)}
# Each swept parameter under the paper's symbol, and the control "fusion =
# independent" (Table 4's "None"); the quoted CSV labels its rows "T=..." and "alpha=...".
SENSITIVITY_LABELS = {"temperature": "T", "rampup_epochs": "α", "fusion": "fusion"}
TABLE4_QUOTED_NAMES = {"temperature": "T", "rampup_epochs": "alpha"}
# Figure 2's single inputs.
INPUT_TYPES = ("id", "text", "image")


def main_grid(profile: str, datasets=DATASETS, seeds=(0,), methods=METHODS) -> dict:
    """Table 2: ``(dataset, method, seed) -> config``."""
    return {(d, m, s): profile_config(profile, d, m, seed=s) for d in datasets for m in methods for s in seeds}


# The seed spread (chapter 08): every method of Table 2 with these seeds on
# the first dataset.
SPREAD_SEEDS = (0, 1, 2)


def spread_grid(profile: str, datasets=DATASETS[:1], seeds=SPREAD_SEEDS, methods=METHODS) -> dict:
    """Table 2's seed spread: ``main_grid`` with ``SPREAD_SEEDS``."""
    return main_grid(profile, datasets=datasets, seeds=seeds, methods=methods)


def ablation_grid(profile: str, datasets=("ml-100k-odmt",), seeds=(0,), rows=tuple(TABLE3_ABLATIONS)) -> dict:
    """Table 3: ``(dataset, row, seed) -> config``, each row's params change
    (``odmt.TABLE3_ABLATIONS``) on the profile's ODMT."""
    return {(d, row, s): profile_config(profile, d, "odmt", seed=s,
                                        **{f"params__{k}": v for k, v in TABLE3_ABLATIONS[row].items()})
            for d in datasets for s in seeds for row in rows}


def sensitivity_grid(profile: str, datasets=("ml-100k-odmt",), seeds=(0,)) -> dict:
    """Table 4: ``(dataset, hyperparameter, value, seed) -> config``, and its
    control "None" (the distillation weight 0: each branch on its own Eq. 5,
    ensembled at inference) as ``(dataset, "fusion", "independent", seed)``."""
    grid = {(d, name, v, s): profile_config(profile, d, "odmt", seed=s, **{f"params__{name}": v})
            for d in datasets for s in seeds for name, values in TABLE4.items() for v in values}
    grid.update({(d, "fusion", "independent", s): profile_config(profile, d, "odmt", seed=s,
                                                                 params__fusion="independent")
                 for d in datasets for s in seeds})
    return grid


def sensitivity_defaults(profile: str, dataset: str) -> dict:
    """Table 4's parameter -> its value in the profile's ODMT: the run every
    sweep shares (the full ODMT), the row "default" of ``report.sweep_rows``."""
    params = profile_config(profile, dataset, "odmt").params
    return {name: getattr(params, name) for name in TABLE4}


# A check of the main table's early stopping: ODMT with twice the patience,
# on the datasets whose selected epoch lies inside the ramp-up (rampup_found).
PATIENCE_CHECK = {"train__patience": 10}
PATIENCE_CHECK_DATASETS = ("beauty-odmt",)


def patience_check_grid(profile: str, datasets=PATIENCE_CHECK_DATASETS, seeds=(0,)) -> dict:
    """``(dataset, "patience 10", seed) -> config``: the profile's ODMT with
    ``PATIENCE_CHECK``'s patience, paired in the chapter against Table 2's
    run to show whether the main run stopped before ODMT had converged; only
    the ``datasets`` among ``PATIENCE_CHECK_DATASETS``, so a chapter passes
    its own dataset list."""
    label = "patience {}".format(PATIENCE_CHECK["train__patience"])
    return {(d, label, s): profile_config(profile, d, "odmt", seed=s, **PATIENCE_CHECK)
            for d in datasets if d in PATIENCE_CHECK_DATASETS for s in seeds}


def single_input_grid(profile: str, datasets=("ml-100k-odmt",), seeds=(0,), inputs=INPUT_TYPES) -> dict:
    """Figure 2 (c)-(d): SASRec on one input type, ``(dataset, input, seed) ->
    config``; image only where the dataset has posters."""
    return {(d, i, s): profile_config(profile, d, "sasrec-single", seed=s, params__input=i)
            for d in datasets for s in seeds for i in inputs if i != "image" or has_images(d)}


def missing_extra() -> str | None:
    """Why ODMT's runs cannot be trained here (the multimodal extra is not
    installed), or None. Stored results render without it."""
    from ..data.features import EXTRA_MESSAGE, text_model_dir
    from ..extras import MissingExtra
    try:
        text_model_dir()
    except MissingExtra:
        return EXTRA_MESSAGE
    return None


# ODMT Table 1's columns, in the order both dataset tables show them.
TABLE1_COLUMNS = ("#Users", "#Items", "#Inter.", "Avg. u", "Density (%)")


def dataset_table(datasets=DATASETS) -> pd.DataFrame:
    """ODMT Table 1's columns for our protocol datasets, and their modalities;
    density in percent, as ``quoted_dataset_table`` shows the paper's (its
    densities are small)."""
    rows = []
    for name in datasets:
        d = load_dataset(name)
        s = dataset_statistics(d)
        rows.append({"dataset": name, **dict(zip(TABLE1_COLUMNS, (
                         s["users"], s["items"], s["actions"], s["avg_actions_per_user"], 100 * (1 - s["sparsity"])))),
                     "modalities": "ID, text, image" if has_images(name) else "ID, text"})
    return pd.DataFrame(rows).set_index("dataset")


def quoted_dataset_table() -> pd.DataFrame:
    """ODMT's Table 1 as quoted, in ``dataset_table``'s units: density in
    percent, counts as integers."""
    theirs = quoted_table("ODMT", 1).pivot(index="dataset", columns="metric", values="value")
    theirs["Density"] *= 100
    counts = ["#Users", "#Items", "#Inter."]
    theirs[counts] = theirs[counts].round().astype("Int64")
    theirs = theirs.rename(columns={"Density": "Density (%)"})[list(TABLE1_COLUMNS)]
    theirs.columns.name = None
    return theirs


def gallery_queries(config, n: int = 4) -> list[int]:
    """The chapter's gallery items: the ``n`` most frequent training targets
    that have a poster (fixed by the data, the same for every run)."""
    import numpy as np
    from ..data import dataset_spec
    from ..data.features import item_image_paths
    from ..runs import run_data
    dataset, split = run_data(config)
    counts = np.bincount(np.concatenate([s[1:] for s in split.train]), minlength=dataset.n_items + 1)
    spec = dataset_spec(config.dataset)
    posters = item_image_paths(spec.features_from or config.dataset, dataset.n_items)
    order = [int(i) for i in np.argsort(-counts, kind="stable") if i > 0 and posters[i - 1] is not None]
    return order[:n]


def nearest_items(result, queries, k: int = 3) -> dict[str, dict[int, list[int]]]:
    """For each branch item space a run stored (``analysis_items_<branch>``):
    each query item's ``k`` nearest other items by cosine similarity
    (``analysis.nearest_to``, never the padding item 0)."""
    import numpy as np
    from ..analysis import nearest_to
    return {name.removeprefix("analysis_items_"): nearest_to(np.asarray(table, dtype=np.float32), queries, k,
                                                             excluded=(0,))
            for name, table in result.ranks().items() if name.startswith("analysis_items_")}


def shared_genre_rates(result, k: int = 3) -> tuple[dict[str, float], float, int]:
    """The gallery's question over every item, not four: in each branch item
    space the run stored, the share of (item, one of its ``k`` nearest
    items) pairs whose two movies share a genre, over the items with a known
    genre (the "unknown" flag is not a genre); and the share among all pairs
    of those items, what neighbours drawn at random give.
    Returns ``(rate per branch, chance rate, items counted)``."""
    import numpy as np
    from ..analysis import nearest_by_cosine
    from ..data.parsers import UNKNOWN_GENRE
    from ..runs import run_data
    dataset, _ = run_data(result.config)
    if dataset.attributes is None or not dataset.attributes.names:
        raise ValueError(f"{result.config.dataset} has no named item genres to compare neighbours by")
    genres = dataset.attributes.multi_hot()
    genres[:, [i for i, name in enumerate(dataset.attributes.names) if name == UNKNOWN_GENRE]] = 0
    items = np.flatnonzero(genres.sum(axis=1) > 0)
    shared = genres[items] @ genres[items].T > 0
    np.fill_diagonal(shared, False)
    n = len(items)
    rates = {}
    for name, table in result.ranks().items():
        if not name.startswith("analysis_items_"):
            continue
        nearest = nearest_by_cosine(np.asarray(table, dtype=np.float32)[items], k)
        rates[name.removeprefix("analysis_items_")] = float(shared[np.arange(n)[:, None], nearest].mean())
    return rates, float(shared.sum() / (n * (n - 1))), n


def shared_genre_found(result, k: int = 3) -> list[str]:
    """A line for "What we found" from the gallery's data
    (``shared_genre_rates``): how often an item's nearest items share a genre
    with it, per branch space, against random pairs."""
    if result is None or not any(n.startswith("analysis_items_") for n in result.ranks()):
        return []
    rates, chance, n = shared_genre_rates(result, k)
    best = max(rates, key=rates.get)
    values = ", ".join(f"{branch} {rate:.1%}" for branch, rate in rates.items())
    above = all(rate > chance for rate in rates.values())
    return [f"{result.config.dataset}, over all {n:,} items with a genre (not only the gallery's queries): an item's "
            f"{k} nearest items in ODMT's item spaces share a genre with it in {values} of cases, against "
            f"{chance:.1%} for two items drawn at random: {'every space' if above else 'not every space'} puts "
            f"movies of a genre nearer each other than random pairs, the {best} space the most, "
            f"{100 * (max(rates.values()) - min(rates.values())):.1f} percentage points above the least"]


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def rampup_found(results) -> list[str]:
    """Lines for "What we found": for each ODMT run trained with online
    distillation and a ramp-up, where its selected epoch and its stop lie
    against the ramp-up (Eq. 10). Early stopping counts patience from the
    best epoch, not from the end of the ramp-up, so on a dataset with many
    steps per epoch the selected model may have been trained while the
    distillation weight was still below one: then the run describes ODMT
    before its distillation reached full weight, and the line says so. Each
    line names the run's patience: a run and its longer-patience check may
    both be read. ``results`` may hold None (not stored) and repeats."""
    lines = []
    # a run listed twice (a table's run and the same run among the first runs) gives one line
    for r in {getattr(r, "key", id(r)): r for r in results if r is not None}.values():
        params = r.config.params
        if not isinstance(params, ODMTParams) or params.fusion != "distill" or params.rampup_epochs == 0:
            continue
        alpha, best, stop = params.rampup_epochs, r.best_epoch, len(r.history)
        where = (f"{r.config.dataset} / {method_label(r.config)} / seed {r.config.seed} (alpha = {alpha}, "
                 f"patience {r.config.train.patience})")
        # the loop counts epochs from 1, Eq. 10 from 0: w first reaches 1 in the loop's epoch alpha + 1
        full = alpha + 1
        if best >= full:
            lines.append(f"{where}: its selected epoch {best} came {_epochs(best - full)} after the distillation "
                         f"weight reached 1 (in epoch {full})")
        else:
            stopped = (f"{_epochs(stop - full)} after the weight reached 1 (in epoch {full})" if stop >= full
                       else f"before the weight reached 1 (in epoch {full})")
            lines.append(f"{where}: its selected epoch {best} was trained with the distillation weight still "
                         f"ramping up (w = {rampup_weight(best - 1, alpha):.2f} in that epoch); the run stopped at "
                         f"epoch {stop}, {stopped}: it describes ODMT before its distillation reached full weight")
    return lines


def no_distillation_run(sensitivity_runs: dict):
    """Table 4's "None" row among ``sensitivity_runs`` (``sensitivity_grid``'s
    results, keyed ``(dataset, setting, value, seed)``): the run whose
    setting is ``fusion``, the branches trained without the KL terms; None
    where it is not stored."""
    return next((r for (d, setting, value, s), r in sensitivity_runs.items()
                 if setting == "fusion" and r is not None), None)


# How our SASRec row of Table 2 differs from the paper's, said beside the comparison of gains.
SASREC_SETUP_DIFFERS = ("our SASRec trains with the full-softmax cross entropy, the paper's with the debiased "
                        "in-batch loss of all its models")
