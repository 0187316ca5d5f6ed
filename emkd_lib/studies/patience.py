"""Patience checks: a Table 2 run trained on with a longer patience, used in
the table in its place when it provably is the same run continued."""
from __future__ import annotations

from ..report.code_changes import distinct_text, epoch_cpu_types, epoch_cpu_units
from ..report.sentences import control_found
from ..report.tables import method_label, run_name

# Another CPU rounds otherwise (vector widths, bf16 paths), so a check
# trained there cannot repeat the main run bit for bit, only to within
# rounding: every shared epoch's loss and validation NDCG@10 within these
# relative tolerances. Another seed is far outside them: its losses differ by
# 2e-4 relative or more from the first epoch on. A CPU is another where its
# name differs, or its vector units, or where a record does not name the
# units (one name covers AMD EPYCs with and without AVX-512).
ROUNDING_TOLERANCE = {"loss": 1e-5, "valid_ndcg10": 1e-3}


def _repeats(main, check) -> str | None:
    """How ``check`` repeats ``main``'s epochs: "" bit for bit, a phrase where
    it does so to within the rounding of another CPU (``ROUNDING_TOLERANCE``),
    None where it does not. Epoch by epoch, a CPU is another where its name
    differs (``code_changes.epoch_cpu_types``) or its vector units
    (``code_changes.epoch_cpu_units``), or where a row does not name the
    units. Where every shared epoch of both ran on the same name and the
    same recorded units, rounding is no excuse and only bit for bit counts."""
    shared, repeated = main.history, check.history[:len(main.history)]
    if len(repeated) < len(shared):
        return None
    if all(a[k] == b[k] for a, b in zip(shared, repeated) for k in ROUNDING_TOLERANCE):
        return ""
    if not all(abs(b[k] - a[k]) <= tolerance * abs(a[k]) for a, b in zip(shared, repeated)
               for k, tolerance in ROUNDING_TOLERANCE.items()):
        return None
    # epoch by epoch: a run resumed across sessions may have trained on more than one CPU
    main_cpus, check_cpus = epoch_cpu_types(main), epoch_cpu_types(check)[:len(shared)]
    main_units, check_units = epoch_cpu_units(main), epoch_cpu_units(check)[:len(shared)]
    tolerance = (f"loss within {ROUNDING_TOLERANCE['loss']:.0e} and validation NDCG@10 within "
                 f"{ROUNDING_TOLERANCE['valid_ndcg10']:.0e}, relative")
    if main_cpus != check_cpus:
        cpus = distinct_text(main_cpus), distinct_text(check_cpus)
        return f" to within rounding (trained on {cpus[1]}, the main run on {cpus[0]}: {tolerance})"
    name = distinct_text(main_cpus)
    if None in main_units or None in check_units:
        return (f" to within rounding (both on {name}, a name that machines with other vector units share, and "
                f"not every epoch's record names the units: {tolerance})")
    if main_units == check_units:
        return None
    units = distinct_text(", ".join(u) for u in main_units), distinct_text(", ".join(u) for u in check_units)
    return (f" to within rounding (both on {name}, with other vector units: {units[1]}, the main run "
            f"{units[0]}; {tolerance})")


def _continued(runs: dict, checks: dict):
    """``(key, check, main)`` for each stored check whose main run (the same
    dataset, method and seed) is in ``runs``."""
    for (dataset, _, seed), check in checks.items():
        main = None if check is None else runs.get((dataset, check.config.method, seed))
        if main is not None:
            yield (dataset, check.config.method, seed), check, main


def with_patience_checks(runs: dict, checks: dict) -> tuple[dict, list[str]]:
    """Table 2's runs (``(dataset, method, seed) -> result``) with each run
    that has a stored patience check (the same dataset, method and seed, only
    ``TrainConfig.patience`` longer; ``checks`` is keyed ``(dataset, label,
    seed)``) replaced by it, and a line naming each replacement.

    The check is the same run trained on: patience does not touch training, so
    its epochs repeat the main run's exactly and its selected epoch is the one
    the main run would have chosen had its patience been longer. That is
    verified, not assumed: a check whose first epochs do not repeat the main
    run's (validation NDCG@10 and loss, bit for bit, or to within rounding
    where the two trained on different CPUs, ``_repeats``) is not used, and
    the line says why."""
    out, lines = dict(runs), []
    for (dataset, method, seed), check, main in _continued(runs, checks):
        label = f"patience {check.config.train.patience}"
        how = _repeats(main, check)
        what = f"{dataset} / {method_label(check.config)} / seed {seed}"
        if how is None:
            lines.append(f"{what}: the run with {label} does not repeat the main run's epochs, so Table 2 keeps the "
                         f"main run (stopped at epoch {len(main.history)})")
            continue
        out[(dataset, method, seed)] = check
        lines.append(f"{what}: Table 2 uses the run with {label}, which repeats the main run's {len(main.history)} "
                     f"epochs{how} and selects epoch {check.best_epoch} (stopped at {len(check.history)}) instead of "
                     f"epoch {main.best_epoch}")
    return out, lines


def check_name(key) -> str:
    """A patience check ``(dataset, method, seed)`` as the chapters name it
    (one seed is checked): ``("ml-1m", "duorec", 0)`` -> "ml-1m / DuoRec"."""
    return run_name(key[:2])


def replaced_runs(runs: dict, table_runs: dict) -> dict:
    """The runs of ``runs`` that ``with_patience_checks`` replaced in
    ``table_runs`` by their checks: the first runs, with the profile's
    patience, which the chapter still reads (the checks are tested against
    them), so their provenance is shown too."""
    return {key: r for key, r in runs.items() if r is not None and table_runs.get(key) is not r}


def patience_check_lines(runs: dict, checks: dict, metric: str = "NDCG@10") -> list[str]:
    """A line for "What we found" per stored check (keyed as in
    ``with_patience_checks``): the check against the run it continues
    (``runs``, the table's runs before replacement), paired over the test
    users on ``metric``; none where the table has no such run."""
    lines = []
    for (dataset, _, _), check, main in _continued(runs, checks):
        lines += control_found(check, main, f"{dataset}: {method_label(check.config)} with patience "
                               f"{check.config.train.patience}", metric=metric,
                               control_is=f"with patience {main.config.train.patience}", note_rising=False)
    return lines


def unchecked_lines(table_runs: dict, checks: dict) -> list[str]:
    """A line per dataset where some run has a stored check (``checks`` keyed
    as in ``with_patience_checks``) and the table's runs (``table_runs``:
    ``(dataset, method, seed) -> result``, after ``with_patience_checks``
    replaced the runs whose check it used) differ in patience: which of them
    trained with the longest patience and which kept a shorter one, so that
    a comparison between the two groups also holds that difference in
    training. A check the table did not use leaves its method's run with
    the shorter patience, and the line counts it there."""
    checked = {dataset for (dataset, _, _), check in checks.items() if check is not None}
    lines = []
    for dataset in sorted(checked):
        stored = [r for (d, _, _), r in table_runs.items() if d == dataset and r is not None]
        longest = max((r.config.train.patience for r in stored), default=None)
        kept = [r for r in stored if r.config.train.patience < longest]
        if not kept:
            continue
        longer = [method_label(r.config) for r in stored if r.config.train.patience == longest]
        patiences = sorted({r.config.train.patience for r in kept})
        lines.append(f"{dataset}: only {', '.join(longer)} trained on with a longer patience ({longest}); "
                     f"{', '.join(method_label(r.config) for r in kept)} kept patience "
                     f"{' or '.join(map(str, patiences))}, so a comparison with them also holds that "
                     f"difference in training")
    return lines


def awaiting_check(runs: dict, checks: dict) -> list[tuple[str, str]]:
    """``(dataset, method label)`` of each run of ``runs`` (keyed
    ``(dataset, method, seed)``) whose patience check (``checks``, keyed
    alike) is not stored yet: its number stands until the check lands, for
    ``report.reference_found``'s ``awaiting_check``."""
    return list(dict.fromkeys((d, method_label(runs[(d, m, s)].config)) for (d, m, s), check in checks.items()
                              if check is None and runs.get((d, m, s)) is not None))
