"""The baseline chapter's runs (EMKD Table 3's single models) and Table 1's ensembles."""
from __future__ import annotations

from ..profiles import profile_config

METHODS = ("gru4rec", "caser", "sasrec", "bert4rec")
DATASETS = ("beauty", "toys", "ml-1m")


def baseline_grid(profile: str, datasets=DATASETS, seeds=(0,), methods=METHODS) -> dict:
    """``(dataset, method, seed) -> config`` of each single model."""
    return {(d, m, s): profile_config(profile, d, m, seed=s) for d in datasets for m in methods for s in seeds}


# EMKD Table 1 (chapter 02): each method with several seeds; the ensembles
# average the stored members' logits, which costs an evaluation, not training.
ENSEMBLE_METHODS = ("gru4rec", "caser", "sasrec")
ENSEMBLE_SEEDS = (0, 1, 2)


def ensemble_grid(profile: str, datasets=DATASETS, seeds=ENSEMBLE_SEEDS, methods=ENSEMBLE_METHODS) -> dict:
    """``(dataset, method, seed) -> config``: Table 1's single models, the
    members of its two-model ensembles among them (``baseline_grid`` with
    the chapter's seeds and methods)."""
    return baseline_grid(profile, datasets, seeds, methods)


PRECISIONS = ("fp32", "bf16")


def precision_grid(profile: str, datasets=("beauty",), seeds=(0,), methods=("sasrec", "emkd")) -> dict:
    """The bf16 check of the performance chapter: ``(dataset, method,
    precision, seed) -> config``, each method trained in fp32 and under bf16
    autocast. SASRec's fp32 run is the baseline chapter's; EMKD's bf16 run
    is the one the EMKD chapters show (``emkd.BUDGET_PRECISION``), its fp32
    run exists only for this check."""
    return {(d, m, p, s): profile_config(profile, d, m, seed=s, train__precision=p)
            for d in datasets for m in methods for p in PRECISIONS for s in seeds}
