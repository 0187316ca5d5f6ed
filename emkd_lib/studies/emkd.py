"""The EMKD chapters' grids: Table 3's EMKD runs, Table 4 (ablations),
Figure 3 (sensitivity), Figure 4 (EMKD on other encoders), Table 5 (depth).

Figures 3 and 4 add seventeen runs to Table 4's nine, more than two cores
can train at Table 4's budget, so the cpu profile shrinks each where it
hurts least (book/emkd.md says how): Figure 3 gives every point
``SENSITIVITY_EPOCHS`` of Table 4's epochs on the full data; Figure 4 runs on
a fixed subsample of ``ENCODER_SWEEP_USERS`` users (the same users in every
run), each encoder alone trained on the same users as its reference. Every
EMKD run (Table 3 and its seed spread, Table 4, Figure 3, the fidelity
table, Figure 4 with its encoders alone) trains under ``BUDGET_PRECISION``
(the fidelity rows and Figure 4 points still missing: ``FALLBACK_PRECISION``);
the single models of the baseline chapters stay fp32. The paper profile
changes none of these.
"""
from __future__ import annotations

from ..methods import method_spec
from ..methods.emkd import EMKD_CODE
from ..profiles import profile_config
from ..report.quoted import SETTINGS_COMPARED
from ..report.tables import ended_still_rising
from ..runs import as_trained_at, results_for, stored
from . import s4rec

# Table 4: each row's change to the EMKD params of the profile, most telling rows first.
ABLATIONS = {
    "EMKD": {},
    "single encoder": {"n_networks": 1},
    "independent training": {"icl": False, "ccl": False, "kd": False},
    "w/o KD": {"kd": False},
    "EMKD x2": {"n_networks": 2},
    "w/o CCL": {"ccl": False},
    "w/o ICL": {"icl": False},
    "w/o AP": {"ap": False},
    "EMKD x4": {"n_networks": 4},
}
# The same rows as the paper's Table 4 labels them (for quoting beside ours).
PAPER_TABLE4_ROWS = {"EMKD": "EMKD(x3)", "single encoder": "Single Encoder",
                     "independent training": "Independent Training", "w/o KD": "Remove KD", "EMKD x2": "EMKD(x2)",
                     "w/o CCL": "Remove CCL", "w/o ICL": "Remove ICL", "w/o AP": "Remove AP", "EMKD x4": "EMKD(x4)"}
# Figure 3: the values each hyperparameter is swept over, the others fixed.
SENSITIVITY = {
    "lam": (0.001, 0.01, 0.1),
    "mu": (0.0001, 0.001, 0.01),
    "tau": (0.1, 0.3, 1.0),
    "n_views": (1, 2, 4),
}
# Figure 3's names for them.
SENSITIVITY_LABELS = {"lam": "lambda", "mu": "mu", "tau": "tau", "n_views": "M"}
SENSITIVITY_EPOCHS = {"cpu": 5}
# Chapter 03's fidelity table: the paper's printed equations (the default),
# the public code's choices all at once, and each alone; plus BERT4Rec's own
# output head (its tied projection and sqrt(d) scaling).
# Each of the public code's choices in words, for the fidelity table's rows.
CODE_CHOICE_TITLES = {
    "params__positives_in_one_logsumexp": "the M positives in one log-sum-exp",
    "params__contrastive_denominator": "the anchor's e^0 in the denominator",
    "params__ap_at_masked_positions_of_last_view": "AP at the last view's masked positions",
    "params__kd_symmetric_detached_teacher": "KD once per pair, symmetric, teacher detached",
    "params__force_a_masked_position": "a view with no position drawn left unmasked",
    "params__shared_initialisation": "one initialisation for every network's blocks",
    "train__grad_clip": "no gradient clipping",
    "train__batch_order": "batches drawn at random",
}
FIDELITY = {
    "printed equations (default)": {},
    "public code (all its choices)": EMKD_CODE,
    **{f"code: {CODE_CHOICE_TITLES[key]}": {key: value} for key, value in EMKD_CODE.items()},
    "BERT4Rec output head and scaling": {"params__output_layer": "bert4rec", "params__scale_embeddings": True},
    # the one printed equation the default departs from, with the public code
    "Eq. 3 as printed: every selected position [mask]": {"params__mask_rule": "printed"},
}
FIDELITY_REFERENCE = next(iter(FIDELITY))   # the printed equations, Table 3's EMKD run
ENCODER_SWEEP_USERS = {"cpu": 3000}
# bf16 autocast brings a converged EMKD run inside one session, the most a run
# can count on (its checkpoints may not outlive the session's machine); in fp32
# it takes longer (chapter 10: the bf16 speed-ups, the campaign's s / epoch).
# The bf16 EMKD run on Beauty is the reference row of every grid here; the
# performance chapter tests it against the same run in fp32
# (``baselines.precision_grid``).
BUDGET_PRECISION = {"cpu": "bf16"}
# A CPU without bf16 units (AVX2 only) runs bf16 autocast through a slow
# fallback, EMKD's epochs several times as long as in fp32 (chapter 10), and
# most of the campaign's machines are such CPUs, so the campaign trains the
# EMKD runs still missing in fp32 on every machine (``grid --precision fp32``,
# scripts/queue.sh). ``budget_results`` takes
# a run at ``BUDGET_PRECISION`` where one is stored, else its fp32 twin;
# ``report.other_draws_found`` names such a row's precision beside its table's
# reference, and chapter 10's check (bf16 against fp32) is the scale of it.
FALLBACK_PRECISION = "fp32"
# The fidelity table's row of its reference trained at FALLBACK_PRECISION.
FALLBACK_REFERENCE = f"{FIDELITY_REFERENCE} in {FALLBACK_PRECISION}"
NEXT_ITEM_ENCODERS = ("sasrec", "gru4rec", "caser")


def emkd_variant(profile: str, dataset: str, seed: int = 0, encoder: str = "bert4rec", **param_changes):
    """The profile's EMKD config with some EMKD params changed (unknown names raise)."""
    return profile_config(profile, dataset, "emkd", seed=seed, encoder=encoder,
                          **{f"params__{k}": v for k, v in param_changes.items()})


def _at_budget_precision(profile: str, config):
    precision = BUDGET_PRECISION.get(profile)
    return at_precision(config, precision) if precision else config


def at_precision(config, precision: str):
    """``config`` trained at ``precision`` ("fp32" or "bf16") instead of its own."""
    return config.replace(train__precision=precision)


def budget_results(grid: dict, train_missing: bool = False, device: str | None = None) -> dict:
    """``results_for`` of an EMKD grid (``key -> config`` at
    ``BUDGET_PRECISION``), where a run not stored at its own precision is
    its ``FALLBACK_PRECISION`` twin if that is stored; with
    ``train_missing`` the runs stored at neither are trained at their own."""
    runs = results_for(grid)
    missing = {k: at_precision(c, FALLBACK_PRECISION) for k, c in grid.items() if runs[k] is None}
    runs.update(results_for(missing))
    if train_missing:
        runs.update(results_for({k: grid[k] for k, r in runs.items() if r is None}, True, device))
    return runs


def as_the_campaign_trains(grid: dict) -> dict:
    """``grid`` (key -> config at ``BUDGET_PRECISION``) as the campaign
    trains it (``grid --precision fp32``, ``runs.as_trained_at``): a run
    stored or checkpointed at its own precision as itself, every other one
    as its ``FALLBACK_PRECISION`` twin, stored or not. The budget prices
    these configs. A run checkpointed at its own precision whose twin is
    stored counts at its own precision, as still to train, while the
    chapters (``budget_results``) show the stored twin until it lands."""
    return dict(zip(grid, as_trained_at(list(grid.values()), FALLBACK_PRECISION)))


def main_grid(profile: str, datasets=("beauty", "toys", "ml-1m"), seeds=(0,)) -> dict:
    """Table 3's EMKD runs: ``(dataset, seed) -> config``, under ``BUDGET_PRECISION``."""
    return {(d, s): _at_budget_precision(profile, emkd_variant(profile, d, s)) for d in datasets for s in seeds}


def table3_grid(profile: str, datasets, seed: int, baselines) -> dict:
    """Chapter 03's Table 3: ``(dataset, method) -> config`` of the
    ``baselines`` and of EMKD (``main_grid``), one seed."""
    from .baselines import baseline_grid
    return {**{(d, m): c for (d, m, _), c in baseline_grid(profile, datasets, (seed,), baselines).items()},
            **{(d, "emkd"): c for (d, _), c in main_grid(profile, datasets, (seed,)).items()}}


# The seed spread (chapter 03): EMKD and SASRec with these seeds on Beauty.
SPREAD_SEEDS = (0, 1, 2)


def spread_grid(profile: str, datasets=("beauty",), seeds=SPREAD_SEEDS) -> dict:
    """Table 3's seed spread: ``(dataset, method, seed) -> config`` of EMKD and
    of SASRec, the single model it is compared with first."""
    from .baselines import baseline_grid
    return {**baseline_grid(profile, datasets, seeds, ("sasrec",)),
            **{(d, "emkd", s): c for (d, s), c in main_grid(profile, datasets, seeds).items()}}


def ablation_grid(profile: str, datasets=("beauty",), seeds=(0,), rows=tuple(ABLATIONS)) -> dict:
    """Table 4: ``(dataset, row, seed) -> config``, under ``BUDGET_PRECISION``."""
    return {(d, row, s): _at_budget_precision(profile, emkd_variant(profile, d, s, **ABLATIONS[row]))
            for d in datasets for s in seeds for row in rows}


def sensitivity_grid(profile: str, datasets=("beauty",), seeds=(0,), epochs: int | None = None) -> dict:
    """Figure 3: ``(dataset, hyperparameter, value, seed) -> config``; every
    hyperparameter's default value maps to the same config."""
    epochs = epochs or SENSITIVITY_EPOCHS.get(profile)
    grid = {}
    for d in datasets:
        for s in seeds:
            for name, values in SENSITIVITY.items():
                for v in values:
                    c = _at_budget_precision(profile, emkd_variant(profile, d, s, **{name: v}))
                    grid[(d, name, v, s)] = c.replace(train__epochs=epochs) if epochs else c
    return grid


def encoder_grid(profile: str, datasets=("beauty",), seeds=(0,), methods=NEXT_ITEM_ENCODERS,
                 networks=(1, 2, 3, 4), max_users: int | None = None) -> dict:
    """Figure 4: ``(dataset, encoder, N, seed) -> config`` on ``max_users``
    users (default ``ENCODER_SWEEP_USERS``), under ``BUDGET_PRECISION``;
    N = 1 is the encoder trained alone (its baseline config), N > 1 EMKD with
    N networks of it. Ordered by N, so a grid cut short has compared every
    encoder at the smaller N."""
    max_users = max_users or ENCODER_SWEEP_USERS.get(profile)
    users = {"data__max_users": max_users} if max_users else {}
    grid = {}
    for d in datasets:
        for s in seeds:
            for n in networks:
                for m in methods:
                    if n == 1:
                        config = profile_config(profile, d, m, seed=s, **users)
                    else:
                        config = emkd_variant(profile, d, s, encoder=m, n_networks=n).replace(**users)
                    grid[(d, m, n, s)] = _at_budget_precision(profile, config)
    return grid


def figure4_grid(profile: str, dataset: str = "beauty", seed: int = 0) -> dict:
    """Figure 4's runs as chapter 04 shows them: ``encoder_grid``, except
    in the smoke profile, where EMKD on a next-item encoder (every position
    of every view scored against the catalogue) is cut to SASRec, N = 1 and
    2, 100 users and one epoch, to keep the smoke chapter fast."""
    if profile != "smoke":
        return encoder_grid(profile, (dataset,), (seed,))
    return {k: c.replace(train__epochs=1) for k, c in
            encoder_grid(profile, (dataset,), (seed,), methods=("sasrec",), networks=(1, 2), max_users=100).items()}


def depth_grid(profile: str, datasets=("beauty",), seeds=(0,), methods=("sasrec", "bert4rec"),
               blocks=(3, 4, 1)) -> dict:
    """Table 5's single models at other depths than the profile's (whose
    run is the baseline chapter's): ``(dataset, method, blocks, seed) -> config``."""
    return {(d, m, b, s): profile_config(profile, d, m, seed=s, encoder_config__n_blocks=b)
            for d in datasets for s in seeds for m in methods for b in blocks}


def table5_singles(profile: str, dataset: str = "beauty", seed: int = 0, depths: bool = True) -> dict:
    """Table 5's single models, ``(method, blocks) -> config``: SASRec, then
    BERT4Rec, each by depth; the profile's own depth is the baseline
    chapter's run, the others ``depth_grid``'s (left out with ``depths=False``,
    as the smoke run does)."""
    configs = {(m, c.encoder_config.n_blocks): c
               for (d, m, b, s), c in (depth_grid(profile, (dataset,), (seed,)) if depths else {}).items()}
    for method in ("sasrec", "bert4rec"):
        own = profile_config(profile, dataset, method, seed=seed)
        configs[(method, own.encoder_config.n_blocks)] = own
    return dict(sorted(configs.items(), key=lambda kv: (kv[0][0] != "sasrec", kv[0][1])))


def blocks_label(blocks: int) -> str:
    """``"1 block"``, ``"3 blocks"``: a depth as Table 5's rows name it."""
    return f"{blocks} block{'s' * (blocks > 1)}"


def depth_label(method: str, blocks: int) -> str:
    """Table 5's single-model row, ``"SASRec (3 blocks)"``."""
    return f"{method_spec(method).title} ({blocks_label(blocks)})"


def encoder_label(encoder: str, networks: int) -> str:
    """Figure 4's row, ``"SASRec alone"`` (one network) or ``"SASRec x3"``:
    one name in its tables, its stopping table and its provenance."""
    name = method_spec(encoder).title
    return f"{name} alone" if networks == 1 else f"{name} x{networks}"


# Table 5's ensembles: EMKD with N networks, each the Table 4 row it is.
TABLE5_ENSEMBLE_ROWS = {1: "single encoder", 2: "EMKD x2", 3: "EMKD"}
# The paper's names of the Table 5 rows ours compares with (its depths 2 and 4).
TABLE5_PAPER_ENSEMBLES = {"EMKD x2": "EMKD(x2)", "EMKD x3": "EMKD(x3)"}
TABLE5_PAPER_DEPTHS = (2, 4)


def ensemble_size_label(networks: int, blocks: int) -> str:
    """Table 5's ensemble row with its size, ``"EMKD x3 (2 blocks a network)"``."""
    return f"EMKD x{networks} ({blocks_label(blocks)} a network)"


def table5_rows(profile: str, dataset: str, seed: int, ablations: dict, train_missing: bool = False,
                device: str = "auto") -> tuple[dict, dict, dict]:
    """Table 5 (chapter 04): ``(depth_runs, sized_singles, sized_ensembles)``.
    ``depth_runs``: ``(method, blocks) -> stored run or None`` of
    ``table5_singles`` (trained where ``train_missing``); ``sized_singles``
    and ``sized_ensembles``: ``label -> (parameters, run or None)``, the
    parameters counted on the modules built for ``dataset``, the ensembles'
    runs those of Table 4 (``ablations``, ``TABLE5_ENSEMBLE_ROWS``)."""
    from ..data import load_dataset
    from ..report.tables import parameter_count
    data = load_dataset(dataset)
    configs = table5_singles(profile, dataset, seed, depths=profile != "smoke")
    depth_runs = results_for(configs, train_missing, device)
    sized_singles = {depth_label(m, b): (parameter_count(c, data), depth_runs[(m, b)]) for (m, b), c in configs.items()}
    sized_ensembles = {}
    for n, row in TABLE5_ENSEMBLE_ROWS.items():
        c = emkd_variant(profile, dataset, seed, n_networks=n)
        label = ensemble_size_label(n, c.encoder_config.n_blocks)
        sized_ensembles[label] = (parameter_count(c, data), ablations.get(row))
    return depth_runs, sized_singles, sized_ensembles


def table5_beside_paper(depth_runs: dict, ablations: dict, dataset: str):
    """Table 5's rows the paper also has (its depths 2 and 4, EMKD x2 and
    x3), ours beside its quoted values (``report.quoted.beside_paper_rows``)."""
    from ..report.quoted import beside_paper_rows
    paper_rows = {depth_label(m, b): f"{method_spec(m).title}-{b} Layers"
                  for (m, b) in depth_runs if b in TABLE5_PAPER_DEPTHS}
    ours = {depth_label(m, b): r for (m, b), r in depth_runs.items()}
    ours.update({"EMKD x2": ablations.get("EMKD x2"), "EMKD x3": ablations.get("EMKD")})
    return beside_paper_rows(ours, "EMKD", 5, dataset, {**paper_rows, **TABLE5_PAPER_ENSEMBLES})


def table5_network_found(profile: str, dataset: str, seed: int, sized_singles: dict, sized_ensembles: dict,
                         networks: int = 3) -> list[str]:
    """One network of EMKD x``networks`` against the profile's SASRec, in
    parameters, beside the paper's Table 5 counts
    (``report.quoted.per_network_parameters_found``)."""
    from ..report.quoted import per_network_parameters_found
    single = depth_label("sasrec", profile_config(profile, dataset, "sasrec").encoder_config.n_blocks)
    ensemble = ensemble_size_label(networks,
                                   emkd_variant(profile, dataset, seed, n_networks=networks).encoder_config.n_blocks)
    return per_network_parameters_found((ensemble, sized_ensembles[ensemble][0]), (single, sized_singles[single][0]),
                                        networks, dataset, (f"EMKD(x{networks})", "SASRec-2 Layers"))


def fidelity_grid(profile: str, datasets=("beauty",), seeds=(0,), rows=tuple(FIDELITY)) -> dict:
    """Chapter 03's departures from the paper, one switched at a time:
    ``(dataset, row, seed) -> config``."""
    return {(d, row, s): _at_budget_precision(profile, profile_config(profile, d, "emkd", seed=s, **FIDELITY[row]))
            for d in datasets for s in seeds for row in rows}


# The settings of ``report.quoted.SETTINGS_COMPARED`` that size the model, as scale_found names them.
MODEL_SIZE_SETTINGS = {"d": "hidden size d", "heads": "attention heads", "M": "masked views M"}


def scale_found(profile: str, datasets=("beauty",)) -> list[str]:
    """A line for "What we found" that bounds the chapter's claims: where
    ``profile``'s EMKD is a smaller model than the paper profile's on any of
    ``datasets`` (hidden size, attention heads, masked views), it names both
    values, and the datasets where they differ if not all. Figure 3's sweep
    of M (``sensitivity_grid``) trains every point for only
    ``SENSITIVITY_EPOCHS`` epochs, so it shows which way M moves an early
    model, not what the paper's M gives a converged one: the claims are
    about this profile's EMKD."""
    compared = dict(SETTINGS_COMPARED)
    settings = [(name, compared[label]) for label, name in MODEL_SIZE_SETTINGS.items()]
    configs = {d: (profile_config(profile, d, "emkd"), profile_config("paper", d, "emkd")) for d in datasets}
    smaller = []
    for name, value in settings:
        differ = {d: (value(ours), value(paper)) for d, (ours, paper) in configs.items() if value(ours) != value(paper)}
        for (a, b) in sorted(set(differ.values())):
            where = [d for d, pair in differ.items() if pair == (a, b)]
            smaller.append(f"{name} = {a} against {b}" + ("" if len(where) == len(configs) else
                                                                     f" on {', '.join(where)}"))
    views = {paper.params.n_views for ours, paper in configs.values() if ours.params.n_views != paper.params.n_views}
    if not smaller:
        return []
    line = (f"every EMKD number above is the {profile} profile's EMKD, a smaller model than the paper profile's, "
            f"which takes the public code's settings where the paper prints none ({'; '.join(smaller)}); a claim "
            f"that EMKD falls short is a claim about this model")
    epochs = SENSITIVITY_EPOCHS.get(profile)
    if epochs and views:
        line += (f": Figure 3's sweep of M (chapter 04) trains each point for {epochs} epochs, which shows how M "
                 f"moves an early model, not what M = {' or '.join(map(str, sorted(views)))} gives a converged one")
    return [line]


# The paper's Figure 5 sets EMKD beside DuoRec and MMInfoRec; MMInfoRec is
# not built here. DuoRec is the S^4Rec chapter's run, on the same windows.
FIGURE5_PEERS = ("duorec",)
# The datasets the paper's Figure 5 plots ("Training efficiency (NDCG@10) on Beauty and Toys datasets").
FIGURE5_DATASETS = ("beauty", "toys")


def figure5_peers(profile: str, datasets, seed: int = 0) -> dict:
    """``(dataset, method) -> stored run or None`` of ``FIGURE5_PEERS``: the
    S^4Rec chapter's Table 2 runs as that table shows them (a stored
    patience check replaces the run it continues), looked up, never
    trained. A run whose data or evaluation differ from EMKD's on that
    dataset raises: Figure 5 compares methods on the same windows only."""
    shared = tuple(d for d in datasets if d in s4rec.DATASETS)
    runs = results_for(s4rec.main_grid(profile, datasets=shared, seeds=(seed,), methods=FIGURE5_PEERS))
    runs, _, _ = s4rec.with_table2_patience_checks(runs, profile, shared, seed)
    out = {}
    for (dataset, method, _), r in runs.items():
        emkd = main_grid(profile, (dataset,), (seed,))[(dataset, seed)]
        if r is not None and (r.config.data, r.config.evaluation) != (emkd.data, emkd.evaluation):
            raise ValueError(f"{dataset} / {method}: its windows or evaluation differ from EMKD's, so Figure 5 "
                             f"cannot set it beside EMKD")
        out[(dataset, method)] = r
    return out


def seconds_to_best(result) -> float:
    """Training seconds (validation excluded) until the epoch early stopping selected."""
    return float(sum(h["train_seconds"] for h in result.history[:result.best_epoch]))


def convergence_found(runs: dict, reference: str, other: str, dataset: str) -> list[str]:
    """A line for "What we found" on the paper's Figure 5 caption ("the
    convergence speed of EMKD is comparable with DuoRec"): ``runs`` maps
    labels to stored runs of one dataset; how long ``reference`` and
    ``other`` trained until their selected epochs, in seconds and epochs,
    and the ratio. Seconds come from each run's own machine and precision,
    so the epochs are the steadier count. The caption is quoted beside the
    datasets its figure plots (``FIGURE5_DATASETS``) only."""
    a, b = runs.get(reference), runs.get(other)
    if a is None or b is None:
        return []
    ta, tb = seconds_to_best(a), seconds_to_best(b)
    line = (f"{dataset}: {reference} reached its selected epoch ({a.best_epoch}, validation NDCG@10 "
            f"{a.history[a.best_epoch - 1]['valid_ndcg10']:.4f}) after {ta:,.0f} s of training, {other} its own "
            f"({b.best_epoch}, {b.history[b.best_epoch - 1]['valid_ndcg10']:.4f}) after {tb:,.0f} s: {reference} "
            f"took {ta / tb:.2f} times {other}'s time and {a.best_epoch / b.best_epoch:.2f} times its epochs"
            + (", where the paper's Figure 5 calls their convergence speed comparable (quoted)"
               if dataset in FIGURE5_DATASETS else
               f" (the paper's Figure 5 plots {' and '.join(FIGURE5_DATASETS)} only: nothing to set beside on "
               f"{dataset})"))
    rising = [f"{label}'s run" + (" (stopped by its epoch cap)" if r.flags.get("stopped_by") == "epoch cap" else "")
              for label, r in ((reference, a), (other, b)) if ended_still_rising(r)]
    if rising:
        bound = "both times are lower bounds" if len(rising) == 2 else "its time is a lower bound"
        line += (f"; {' and '.join(rising)} ended still rising, so {bound} on the time to converge, and the ratios "
                 f"are not yet the paper's comparison")
    return [line]



def fidelity_runs(profile: str, dataset: str, seed: int, train_missing: bool = False,
                  device: str = "auto") -> dict:
    """Chapter 03's fidelity table: ``row -> stored run or None`` for every
    row of ``FIDELITY`` (``fidelity_grid``, read by ``budget_results``),
    trained where ``train_missing``; in the smoke profile only the reference
    row (Table 3's EMKD run) trains, the others are looked up. Where a row
    was read at ``FALLBACK_PRECISION`` and the reference was not, a last row
    (``FALLBACK_REFERENCE``) holds the reference's own run at that
    precision where stored (chapter 10's precision check): what precision
    alone moves, beside the rows it also moves."""
    grid = fidelity_grid(profile, (dataset,), (seed,))
    trained = {FIDELITY_REFERENCE} if profile == "smoke" else set(FIDELITY)
    found = {**budget_results({k: c for k, c in grid.items() if k[1] in trained}, train_missing, device),
             **budget_results({k: c for k, c in grid.items() if k[1] not in trained})}
    runs = {row: found[(dataset, row, seed)] for row in FIDELITY}
    precisions = {r.config.train.precision for r in runs.values() if r is not None}
    reference = runs[FIDELITY_REFERENCE]
    if reference is not None and reference.config.train.precision != FALLBACK_PRECISION \
            and FALLBACK_PRECISION in precisions:
        twin = stored(at_precision(grid[(dataset, FIDELITY_REFERENCE, seed)], FALLBACK_PRECISION))
        if twin is not None:
            runs[FALLBACK_REFERENCE] = twin
    return runs


def equal_time_section(runs: dict, peers: dict, datasets, reference: str = "EMKD",
                       peer: str = "DuoRec") -> tuple[dict, list[str]]:
    """Chapter 03's "at equal training time" section: per dataset, the table
    of every method's validation NDCG@10 read at one shared training time
    (``report.tables.equal_time_table`` over ``runs`` and ``peers``, both
    keyed ``(dataset, method)``), and the lines for "What we found":
    ``equal_time_found`` against ``reference`` and ``convergence_found``
    of ``reference`` against ``peer``. Returns ``({dataset: table}, lines)``."""
    from ..report.sentences import equal_time_found
    from ..report.tables import equal_time_table, method_label
    tables, lines = {}, []
    for dataset in datasets:
        shown = {label: r for label, r in {**runs, **peers}.items() if label[0] == dataset}
        tables[dataset] = equal_time_table(shown)
        lines += equal_time_found(tables[dataset], reference, dataset)
        lines += convergence_found({method_label(r.config): r for r in shown.values() if r is not None},
                                   reference, peer, dataset)
    return tables, lines
