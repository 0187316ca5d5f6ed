"""Which stored runs fill which cells of the papers' tables: the input of the
scorecard chapter (``quoted.scorecard``). Each function returns one
``quoted.reproduction_cells`` frame per paper table, keyed by the paper's own
row labels, with the config each cell would run and the one the paper's
setting gives (``reference_profile``), so that the chapter can name what
differs. Nothing here trains: a cell without a stored run is "not run yet".
"""
from __future__ import annotations

import pandas as pd

from ..runs import ensembles_for, results_for
from ..studies import baselines as baseline_study
from ..studies import emkd as emkd_study
from ..studies import s4rec as s4rec_study
from .quoted import reproduction_cells
from .tables import method_label

EMKD_TABLE3_METRICS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")
S4REC_METRICS = ("HR@5", "HR@20", "NDCG@5", "NDCG@20")
# EMKD Table 5 as chapter 04 builds it: single models at the paper's depths,
# and the ensembles of Table 4 under the paper's names.
TABLE5_DEPTHS = {"sasrec": "SASRec", "bert4rec": "BERT4Rec"}
TABLE5_ENSEMBLES = {emkd_study.TABLE5_ENSEMBLE_ROWS[n]: f"EMKD(x{n})" for n in (2, 3)}


def emkd_table1_cells(profile: str, reference_profile: str, datasets, single_seeds, ensemble_seeds
                      ) -> pd.DataFrame:
    """EMKD Table 1: GRU4Rec, Caser and SASRec alone (the mean over
    ``single_seeds`` stored) and the ensemble of the two ``ensemble_seeds``."""
    seeds = tuple(sorted(set(single_seeds) | set(ensemble_seeds)))
    methods = baseline_study.ENSEMBLE_METHODS
    grid = baseline_study.ensemble_grid(profile, datasets, seeds, methods)
    reference = baseline_study.ensemble_grid(reference_profile, datasets, seeds, methods)
    runs = results_for(grid)
    ensembles = ensembles_for(grid, runs, ensemble_seeds)
    ours, configs, references = {}, {}, {}
    for d in datasets:
        for m in methods:
            name = method_label(grid[(d, m, min(single_seeds))])
            ours[(d, name)] = [runs[(d, m, s)] for s in single_seeds if runs.get((d, m, s)) is not None]
            ours[(d, f"{name} Ensemble(2x)")] = ensembles[(d, m)]
            for key, s in (((d, name), min(single_seeds)), ((d, f"{name} Ensemble(2x)"), min(ensemble_seeds))):
                configs[key], references[key] = grid[(d, m, s)], reference[(d, m, s)]
    return reproduction_cells("EMKD", 1, ours, ("NDCG@10",), configs, references)


def _emkd_table3_grid(profile: str, datasets, seed: int) -> dict:
    return {**{(d, m): c for (d, m, s), c in baseline_study.baseline_grid(profile, datasets, (seed,)).items()},
            **{(d, "emkd"): c for (d, s), c in emkd_study.main_grid(profile, datasets, (seed,)).items()}}


def emkd_table3_cells(profile: str, reference_profile: str, datasets, seed: int) -> pd.DataFrame:
    """EMKD Table 3: the four single-model baselines and EMKD, one seed each."""
    grid, reference = _emkd_table3_grid(profile, datasets, seed), _emkd_table3_grid(reference_profile, datasets, seed)
    runs = results_for(grid)
    names = {key: (key[0], method_label(config)) for key, config in grid.items()}
    return reproduction_cells("EMKD", 3, {names[k]: runs[k] for k in grid}, EMKD_TABLE3_METRICS,
                              {names[k]: grid[k] for k in grid}, {names[k]: reference[k] for k in grid})


def emkd_table4_and_5_cells(profile: str, reference_profile: str, dataset: str, seed: int
                            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """EMKD Table 4 (chapter 04's ablation rows under the paper's labels)
    and Table 5 (single models at depths 2 and 4, EMKD x2 and x3), on the
    dataset chapter 04 runs them on."""
    grid = emkd_study.ablation_grid(profile, (dataset,), (seed,))
    reference = emkd_study.ablation_grid(reference_profile, (dataset,), (seed,))
    runs = results_for(grid)
    keys = {(dataset, row, seed): (dataset, emkd_study.PAPER_TABLE4_ROWS[row]) for row in emkd_study.ABLATIONS}
    table4 = reproduction_cells("EMKD", 4, {keys[k]: runs[k] for k in keys}, ("NDCG@10",),
                                {keys[k]: grid[k] for k in keys}, {keys[k]: reference[k] for k in keys})
    # The paper's depths by number (a profile's own depth may be another).
    singles = emkd_study.depth_grid(profile, (dataset,), (seed,), tuple(TABLE5_DEPTHS), blocks=(2, 4))
    reference_singles = emkd_study.depth_grid(reference_profile, (dataset,), (seed,), tuple(TABLE5_DEPTHS),
                                              blocks=(2, 4))
    single_runs = results_for(singles)
    keys = {k: (dataset, f"{TABLE5_DEPTHS[k[1]]}-{k[2]} Layers") for k in singles}
    ours = {keys[k]: single_runs[k] for k in singles}
    configs = {keys[k]: singles[k] for k in singles}
    references = {keys[k]: reference_singles[k] for k in singles}
    for row, paper_name in TABLE5_ENSEMBLES.items():
        key, ours_key = (dataset, paper_name), (dataset, row, seed)
        ours[key], configs[key], references[key] = runs[ours_key], grid[ours_key], reference[ours_key]
    return table4, reproduction_cells("EMKD", 5, ours, ("NDCG@10",), configs, references)


def s4rec_table2_cells(profile: str, reference_profile: str, datasets, seed: int) -> pd.DataFrame:
    """S^4Rec Table 2: SASRec, CL4SRec, ICLRec and S^4Rec (the methods of
    ``studies.s4rec`` that the paper's table has), one seed each; a run with
    a stored patience check is replaced by it, as chapter 05 does."""
    methods = tuple(m for m, column in s4rec_study.PAPER_TABLE2_COLUMNS.items() if column)
    grid = s4rec_study.main_grid(profile, datasets, (seed,), methods)
    reference = s4rec_study.main_grid(reference_profile, datasets, (seed,), methods)
    runs, _, _ = s4rec_study.with_table2_patience_checks(results_for(grid), profile, datasets, seed)
    names = {(d, m, s): (d, s4rec_study.PAPER_TABLE2_COLUMNS[m]) for (d, m, s) in grid}
    return reproduction_cells("S4Rec", 2, {names[k]: runs[k] for k in grid}, S4REC_METRICS,
                              {names[k]: grid[k] for k in grid}, {names[k]: reference[k] for k in grid})


def s4rec_table3_cells(profile: str, reference_profile: str, dataset: str, seed: int) -> pd.DataFrame:
    """S^4Rec Table 3: the ablation rows, whose labels are the paper's."""
    grid = s4rec_study.ablation_grid(profile, (dataset,), (seed,))
    reference = s4rec_study.ablation_grid(reference_profile, (dataset,), (seed,))
    runs = results_for(grid)
    return reproduction_cells("S4Rec", 3, {(d, row): runs[(d, row, s)] for (d, row, s) in grid}, S4REC_METRICS,
                              {(d, row): grid[(d, row, s)] for (d, row, s) in grid},
                              {(d, row): reference[(d, row, s)] for (d, row, s) in grid})
