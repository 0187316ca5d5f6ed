"""Conclusions in words, computed from the stored numbers (never typed): comparisons, gains, "What we found"."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..evaluation import paired_test
from .tables import ended_still_rising, method_label, relative_change



def p_text(p: float) -> str:
    """A p-value as the book prints it: three decimals, or scientific below 0.001."""
    return f"p = {p:.1e}" if p < 1e-3 else f"p = {p:.3f}"


def significance_verdict(p: float, alpha: float) -> str:
    """"significant" below ``alpha``, else "not significant"."""
    return "significant" if p < alpha else "not significant"


def comparison_sentences(sig: pd.DataFrame, datasets, others=("SASRec", "BERT4Rec"), reference: str = "EMKD",
                         metric: str = "NDCG@10", alpha: float = 0.01) -> str:
    """A Markdown list, one line per (dataset, other method): ``reference``
    against it, read off a ``significance_table(..., reference=reference)``:
    its relative change in ``metric``, both values, the paired test's p and
    whether that is below ``alpha``; "not run yet" where either run is missing."""
    lines = []
    for dataset in datasets:
        for other in others:
            row = sig[(sig["dataset"] == dataset) & (sig["other"] == other)] if len(sig) else sig
            if len(row) == 0:
                lines.append(f"- {reference} vs {other} on {dataset}: not run yet")
                continue
            row = row.iloc[0]
            p = row["p (Wilcoxon)"]
            verdict = significance_verdict(p, alpha)
            change = row["change %"]
            change = f"{change:+.1f}%" if np.isfinite(change) else f"no relative change ({other} scores 0)"
            lines.append(f"- {reference} vs {other} on {dataset}: {change} {metric} "
                         f"({row[f'reference {metric}']:.4f} vs {row[f'other {metric}']:.4f}), "
                         f"{p_text(p)}, {verdict} at {alpha}")
    return "\n".join(lines)


def ensemble_gain_sentences(gains: pd.DataFrame, metric: str = "NDCG@10", alpha: float = 0.01) -> str:
    """A Markdown list read off an ``ensemble_gain_table``: per (dataset,
    method) the ensemble of two against the mean of its two members, and
    whether it beats its better member at p < ``alpha``; then how many did."""
    lines, tested, real = [], 0, 0
    for (dataset, method), row in gains.iterrows():
        ens = row.get(f"ensemble x2 {metric}", np.nan)
        if not np.isfinite(ens):
            lines.append(f"- {method} on {dataset}: not run yet")
            continue
        p = row.get("p vs better member (Wilcoxon)", np.nan)
        gain, members = row["gain over members' mean %"], row["members' mean"]
        text = (f"- {method} on {dataset}: the ensemble of two is {gain:+.1f}% {metric} "
                f"over the mean of its two members ({ens:.4f} vs {members:.4f})")
        better = row.get("better member", np.nan)
        if np.isfinite(better):
            text += f", {relative_change(ens, better):+.1f}% over the better one ({better:.4f})"
        if np.isfinite(p):
            tested += 1
            real += bool(p < alpha)
            text += f"; against its better member {p_text(p)}, {significance_verdict(p, alpha)} at {alpha}"
        lines.append(text)
    if tested:
        lines.append(f"- in all: {real} of {tested} ensembles differ from their better member at p < {alpha}")
    return "\n".join(lines)


# --- Reproduction scorecard -------------------------------------------------

def found_section(lines) -> str:
    """The closing "What we found" of a chapter: a Markdown list of computed
    ``lines`` (empty ones dropped), or "not run yet" when there is none."""
    lines = [line for line in lines if line]
    if not lines:
        return "- not run yet: no result of this chapter is stored under this profile"
    return "\n".join(line if line.startswith("- ") else f"- {line}" for line in lines)


def best_per_dataset(table: pd.DataFrame, metric: str = "NDCG@10") -> list[str]:
    """Read off a ``metrics_table``: per dataset the best method by
    ``metric`` and the runner-up, with their values and the gap in percent;
    a dataset with one method stored says only that, with its value."""
    lines = []
    if table.empty:
        return lines
    for dataset in dict.fromkeys(table.columns.get_level_values(0)):
        if (dataset, metric) not in table.columns:
            continue
        values = table[(dataset, metric)].dropna().sort_values(ascending=False)
        if values.empty:
            continue
        if len(values) == 1:
            lines.append(f"on {dataset} only {values.index[0]} is stored so far (test {metric} {values.iloc[0]:.4f})")
            continue
        line = f"on {dataset} the best by test {metric} is {values.index[0]} ({values.iloc[0]:.4f})"
        gap = relative_change(values.iloc[0], values.iloc[1])
        line += (f", {gap:+.1f}% over" if np.isfinite(gap) else ", ahead of") + \
            f" {values.index[1]} ({values.iloc[1]:.4f})"
        lines.append(line)
    return lines


def ratio_summary(table: pd.DataFrame, what: str, ratio_column: str = "ratio") -> str:
    """One line on a beside-the-paper table: how many rows have a ratio
    ours / quoted, their median and range; "not run yet" when none has."""
    if ratio_column not in table:
        return f"{what}: nothing run yet to set beside the paper"
    ratios = pd.to_numeric(table[ratio_column], errors="coerce").dropna()
    if ratios.empty:
        return f"{what}: nothing run yet to set beside the paper"
    return (f"{what}: ours / the paper's value has median {ratios.median():.2f} over {len(ratios)} "
            f"cell{'s' * (len(ratios) > 1)} (from {ratios.min():.2f} to {ratios.max():.2f})")


def ensemble_found(gains: pd.DataFrame, metric: str = "NDCG@10", alpha: float = 0.01) -> str:
    """One line on an ``ensemble_gain_table``: in how many (dataset, method)
    pairs the ensemble of two beats the mean of its two members, and how many
    of those tested beat their better member at p < ``alpha``."""
    column = f"ensemble x2 {metric}"
    if column not in gains:
        return ""
    done = gains[np.isfinite(gains[column].astype(float))]
    if done.empty:
        return ""
    gain = pd.to_numeric(done["gain over members' mean %"], errors="coerce")
    above = int((done[column].astype(float) > done["members' mean"].astype(float)).sum())
    line = f"the ensemble of two beats the mean of its two members in {above} of {len(done)} (dataset, method) pairs"
    if gain.notna().any():  # members scoring 0 give no relative gain
        line += f" (median gain {gain.median():+.1f}% {metric})"
    p = pd.to_numeric(done.get("p vs better member (Wilcoxon)", pd.Series(dtype=float)), errors="coerce").dropna()
    if len(p):
        line += f"; {int((p < alpha).sum())} of {len(p)} differ from their better member at p < {alpha}"
    return line


def reference_found(sig: pd.DataFrame, reference: str = "EMKD", metric: str = "NDCG@10", alpha: float = 0.01,
                    still_rising: list[tuple[str, str]] = (), awaiting_check: list[tuple[str, str]] = ()) -> str:
    """One line on a ``significance_table(..., reference=...)``: against how
    many methods the reference is significantly above, below, or not
    different at p < ``alpha``, and its median relative change. With
    ``still_rising`` (``still_rising_runs`` of the compared runs: (dataset,
    method label) pairs), the wins over a run that ended still rising are
    named: its number is a lower bound, so such a win may be one of
    training, not of method. ``awaiting_check`` (pairs of the same kind,
    e.g. ``studies.patience.awaiting_check``) names the runs that stopped
    without the flag but wait on a longer-patience check: a win over one of
    them is named apart, as one that check may still change."""
    if sig.empty or "reference" not in sig:
        return ""
    significant = sig["p (Wilcoxon)"] < alpha
    wins = significant & (sig[f"reference {metric}"] > sig[f"other {metric}"])
    above, below = int(wins.sum()), int((significant & (sig[f"reference {metric}"] < sig[f"other {metric}"])).sum())
    change = pd.to_numeric(sig["change %"], errors="coerce").dropna()
    line = (f"{reference} is significantly above the other method in {above}, below it in {below} and not different "
            f"in {len(sig) - above - below} of {len(sig)} paired comparisons (p < {alpha})")
    if len(change):
        line += f"; its median change in {metric} is {change.median():+.1f}%"
    rising = set(still_rising)
    over_rising = [f"{row['dataset']} / {row['other']}" for _, row in sig[wins].iterrows()
                   if (row["dataset"], row["other"]) in rising]
    if len(over_rising) == 1:
        line += (f"; 1 of its {above} wins is over a run still rising when it stopped, whose number is a lower "
                 f"bound ({over_rising[0]})")
    elif over_rising:
        line += (f"; {len(over_rising)} of its {above} wins are over runs still rising when they stopped, whose "
                 f"numbers are lower bounds ({', '.join(over_rising)})")
    waiting = set(awaiting_check) - rising
    over_waiting = [f"{row['dataset']} / {row['other']}" for _, row in sig[wins].iterrows()
                    if (row["dataset"], row["other"]) in waiting]
    if over_waiting:
        one = len(over_waiting) == 1
        line += (f"; {len(over_waiting)} {'is' if one else 'are'} over {'a run' if one else 'runs'} that patience "
                 f"stopped without the flag and that {'waits' if one else 'wait'} on a longer-patience check, which "
                 f"may change {'it' if one else 'them'} ({', '.join(over_waiting)})")
    return line


def claim_found(sig: pd.DataFrame, datasets, reference: str, metric: str = "NDCG@10", alpha: float = 0.01,
                not_stored: dict | None = None) -> str:
    """The paper's headline claim read off a ``significance_table(...,
    reference=reference)``: on how many of ``datasets`` the reference is
    significantly above every other method (paired over the test users, p <
    ``alpha``), the datasets where it is not stored yet, and on each dataset
    its change against the strongest other method there (by ``metric``).
    ``not_stored`` (dataset -> labels of the other methods not stored there)
    qualifies a dataset's verdict: it is over the methods stored so far."""
    rows = sig[sig["dataset"].isin(list(datasets))] if not sig.empty and "reference" in sig else sig.iloc[:0]
    run = [d for d in datasets if (rows["dataset"] == d).any()] if len(rows) else []
    missing = [d for d in datasets if d not in run]
    holds, against = 0, []
    for dataset in run:
        here = rows[rows["dataset"] == dataset]
        won = (here["p (Wilcoxon)"] < alpha) & (here[f"reference {metric}"] > here[f"other {metric}"])
        holds += bool(won.all())
        strongest = here.loc[here[f"other {metric}"].idxmax()]
        p = strongest["p (Wilcoxon)"]
        change = strongest["change %"]
        change = f"{change:+.1f}%" if np.isfinite(change) else f"no relative change ({strongest['other']} scores 0)"
        absent = (not_stored or {}).get(dataset)
        against.append(f"{dataset} {strongest['other']} {change} ({p_text(p)}, {significance_verdict(p, alpha)}"
                       + (f"; {', '.join(absent)} not stored there yet" if absent else "") + ")")
    line = (f"the paper's claim, {reference} above every other method: it holds on {holds} of the {len(run)} "
            f"datasets where {reference} is stored")
    if missing:
        line += f" (not yet trained on {', '.join(missing)})"
    if against:
        line += f"; {reference} in test {metric} against the strongest other method on each: " + ", ".join(against)
    return line


def gain_found(gains: pd.DataFrame, sig: pd.DataFrame, target: str, reference: str, metric: str = "NDCG@10",
               alpha: float = 0.01, setup_differs: str = "") -> list[str]:
    """Lines for "What we found": our gain of ``target`` over ``reference``
    per dataset with its paired test (``significance_table(..., reference=
    target)``), beside the range of the paper's gains (``gains_beside_paper``);
    ``setup_differs`` says how our ``reference`` is trained otherwise than the
    paper's, where it is, after that range."""
    if "gain %" not in gains.columns:
        return [f"{target} against {reference}: not both run yet"]
    lines = []
    g = gains.reset_index()
    quoted = g[g["source"] != "ours"]
    quoted = quoted[quoted["metric"] == metric]["gain %"]
    for _, row in g[(g["source"] == "ours") & (g["metric"] == metric)].iterrows():
        test = sig[(sig["dataset"] == row["dataset"]) & (sig["other"] == reference)] if len(sig) else sig
        p = f", {p_text(float(test['p (Wilcoxon)'].iloc[0]))}" if len(test) else ""
        verdict = ("" if not len(test) else
                   " (significant)" if test["p (Wilcoxon)"].iloc[0] < alpha else " (not significant)")
        lines.append(f"{row['dataset']}: {target} {metric} {row[target]:.4f} against {reference} "
                     f"{row[reference]:.4f}, {row['gain %']:+.1f}%{p}{verdict}")
    if len(quoted):
        lines.append(f"the paper reports {target} {quoted.min():+.1f}% to {quoted.max():+.1f}% over {reference} "
                     f"in {metric} on its {len(quoted)} datasets (quoted; other datasets than ours"
                     + (f"; {setup_differs}" if setup_differs else "") + ")")
    return lines


def curves_found(runs: dict, what: str, figure: str = "the paper's Figure 2", metric: str = "HR@10",
                 alpha: float = 0.01) -> list[str]:
    """Lines for "What we found" from training curves (the ODMT chapter's
    Figure 2 runs): ``runs`` a label -> stored run dict. Which run has the
    lowest training loss at the last epoch every run reached (runs stop at
    different epochs, and a longer run's loss is lower for that alone);
    which reaches the best validation NDCG@10 by then, the quality the
    chapter's curves plot; whether those are one run (``figure`` reports that the
    lowest loss is not the best model); and the best test ``metric`` (the
    paper's Figure 2(d) plots testing Recall@10, our HR@10: one held-out
    item) against the runner-up, by the paired test over test users, so a
    gap of a few users is not read as an order."""
    stored = {label: r for label, r in runs.items() if r is not None and r.history}
    if len(stored) < 2:
        return [f"{what}: not enough runs stored yet ({len(stored)})"]
    common = min(len(r.history) for r in stored.values())
    loss = {label: r.history[common - 1]["loss"] for label, r in stored.items()}
    valid = {label: max(h["valid_ndcg10"] for h in r.history[:common]) for label, r in stored.items()}
    tested = {label: r.test_metrics[metric] for label, r in stored.items()}
    lowest, best_valid = min(loss, key=loss.get), max(valid, key=valid.get)
    best, runner_up = sorted(tested, key=tested.get, reverse=True)[:2]
    same = (f"the run with the lowest loss is also the one with the best validation score, unlike {figure}, "
            f"where the input with the lowest training loss is not the one that ranks best" if lowest == best_valid
            else f"the run with the lowest loss is not the one with the best validation score, as in {figure}")
    p = paired_test(stored[best].test_ranks, stored[runner_up].test_ranks, metric)["p_wilcoxon"]
    order = significance_verdict(p, alpha) + ("" if p < alpha else
                                              f": the test users do not order {best} and {runner_up}")
    return [f"{what}: at epoch {common}, the last that every run reached, the lowest training loss is "
            f"{lowest}'s ({loss[lowest]:.3f}; " + ", ".join(f"{k} {v:.3f}" for k, v in loss.items() if k != lowest)
            + f"); the best validation NDCG@10 up to that epoch is {best_valid}'s ({valid[best_valid]:.4f}; "
            + ", ".join(f"{k} {v:.4f}" for k, v in valid.items() if k != best_valid) + f"): {same}",
            f"{what}: the best test {metric} (at each run's selected epoch) is {best}'s ({tested[best]:.4f}; "
            + ", ".join(f"{k} {v:.4f}" for k, v in tested.items() if k != best)
            + f"); against {runner_up}, {p_text(p)} ({order})"]


def progress_at_epoch(run, epochs: int, what: str) -> str:
    """How far a converged ``run`` had got after ``epochs`` epochs: its
    validation NDCG@10 then against its best and the epoch of that best. The
    sentence that sizes a sweep trained for a fixed, short budget of epochs
    against the converged run at the same settings."""
    if run is None or not run.history:
        return f"{what}: not run yet"
    values = [h["valid_ndcg10"] for h in run.history]
    if epochs > len(values):
        return f"{what}: it stopped at epoch {len(values)}, before epoch {epochs}"
    at, best = values[epochs - 1], max(values)
    return (f"{what}: after {epochs} epochs its validation NDCG@10 was {at:.4f}, {at / best:.0%} of its best "
            f"({best:.4f}, epoch {values.index(best) + 1} of {len(values)})")


def control_found(run, control, what: str, metric: str = "NDCG@10", alpha: float = 0.01,
                  control_is: str = "without it", note_rising: bool = True) -> list[str]:
    """A line for "What we found": ``run`` against its ``control`` (e.g. ODMT
    against the same branches without distillation, Table 4's "None"), paired
    over the test users; ``control_is`` names the control after its value;
    "not run yet" while either is missing. Where either ended still rising
    (``ended_still_rising``) the line says which: its number is a lower bound,
    so the difference is partly one of training (``note_rising=False`` where
    the control is that difference: a longer patience)."""
    from ..evaluation import paired_test
    if run is None or control is None:
        return [f"{what}: not both run yet"]
    t = paired_test(run.test_ranks, control.test_ranks, metric)
    verdict = significance_verdict(t["p_wilcoxon"], alpha)
    line = (f"{what}: {metric} {t['mean_a']:.4f} against {t['mean_b']:.4f} {control_is}, "
            f"{relative_change(t['mean_a'], t['mean_b']):+.1f}%, {p_text(t['p_wilcoxon'])} ({verdict})")
    rising = [name for name, r in (("the run", run), (f"the run {control_is}", control))
              if note_rising and ended_still_rising(r)]
    if rising:
        line += (f"; {' and '.join(rising)} ended still rising (a lower bound), so the difference is partly one "
                 f"of training")
    return [line]


def later_stops_found(stopped, others: dict, rival, what: str, metric: str = "NDCG@10",
                      alpha: float = 0.01) -> list[str]:
    """A line for "What we found" on a run that ended still rising
    (``still_rising_runs``) and trails ``rival``: the stored runs of the same
    method on the same data that trained for more epochs (``others``, label ->
    result: other seeds, one-switch variants) and the one among them with the
    highest validation ``metric`` (chosen as a run's epoch is chosen, never by
    the test split), paired over the test users against ``rival``. They are other
    draws, not ``stopped`` continued, so the line bounds what later stops gave
    this method at this budget, without a longer run. None where ``stopped``
    or ``rival`` is missing or ``stopped`` did not end still rising; "no other
    run trained longer" where none did."""
    from ..evaluation import paired_test
    if stopped is None or rival is None or not ended_still_rising(stopped):
        return []
    epochs = len(stopped.history)
    longer = {label: r for label, r in others.items() if r is not None and len(r.history) > epochs}
    if not longer:
        return [f"{what} stopped still rising at epoch {epochs}; no other run of it trained longer"]
    label, best = max(longer.items(), key=lambda item: item[1].valid_metrics[metric])
    t = paired_test(best.test_ranks, rival.test_ranks, metric)
    own = paired_test(stopped.test_ranks, rival.test_ranks, metric)
    ends = sorted(len(r.history) for r in longer.values())
    stops = f"epoch {ends[0]}" if ends[0] == ends[-1] else f"epochs {ends[0]} to {ends[-1]}"
    return [f"{what} stopped still rising at epoch {epochs}, {relative_change(own['mean_a'], own['mean_b']):+.1f}% "
            f"against {method_label(rival.config)} in test {metric} ({own['mean_a']:.4f} vs {own['mean_b']:.4f}); "
            f"{len(longer)} other run{'s' * (len(longer) > 1)} on the same data (its other seeds, or variants "
            f"with one part switched) trained longer (stopping at {stops}: "
            f"{', '.join(map(str, longer))}); the one with the highest validation {metric} among them "
            f"({label}, best epoch {best.best_epoch} of {len(best.history)}) has test {metric} {t['mean_a']:.4f}, "
            f"{relative_change(t['mean_a'], t['mean_b']):+.1f}% against {method_label(rival.config)}, "
            f"{p_text(t['p_wilcoxon'])} "
            f"({significance_verdict(t['p_wilcoxon'], alpha)})"]


def shared_stop_found(runs: dict, what: str, min_rows: int = 3) -> list[str]:
    """A line for a table of one-switch runs (``label -> result``) trained
    with one seed, where at least ``min_rows`` rows stopped by patience at the
    same epoch after selecting the same one: the validation NDCG@10 step into
    and out of that epoch, averaged over those rows, and the rows that trained
    past it. One seed gives every row the same batches in the same order, so
    a noisy validation peak can be common to all of them, and patience then
    ends them together: their differences are read at that one peak. None
    where no such group exists."""
    stored = {label: r for label, r in runs.items() if r is not None and r.history}
    groups: dict[tuple, list] = {}
    for label, r in stored.items():
        if r.flags.get("stopped_by") == "patience":
            groups.setdefault((r.best_epoch, len(r.history)), []).append(label)
    if not groups:
        return []
    (best, stop), labels = max(groups.items(), key=lambda item: len(item[1]))
    if len(labels) < min_rows or not 1 < best < stop:
        return []

    def step(r, a, b):
        valid = {h["epoch"]: h["valid_ndcg10"] for h in r.history}
        return relative_change(valid[b], valid[a])

    into = np.mean([step(stored[label], best - 1, best) for label in labels])
    out = np.mean([step(stored[label], best, best + 1) for label in labels])
    line = (f"{what}: {len(labels)} of {len(stored)} rows select epoch {best} and stop at epoch {stop}; their "
            f"validation NDCG@10 steps {into:+.1f}% into epoch {best} and {out:+.1f}% out of it (means over those "
            f"rows), a peak the rows share through one seed's batch order, so patience ended them together and "
            f"their differences are read at that one peak")
    past = {label: r for label, r in stored.items() if len(r.history) > stop}
    if past:
        line += (f"; {len(past)} {'row' if len(past) == 1 else 'rows'} trained past it (" + ", ".join(
            f"{label}: best epoch {r.best_epoch} of {len(r.history)}" for label, r in past.items()) + ")")
    return [line]


def seed_scale_found(table: pd.DataFrame, reference: str, seeds: list, what: str,
                     metric: str = "NDCG@10") -> list[str]:
    """A line on a table of one-switch rows (an ``ablation_table``) read
    against the spread of its ``reference`` over seeds (``seeds``: stored runs
    of the reference configuration, one per seed, the table's own among
    them): how many rows differ from the reference by less than one seed
    standard deviation, and where the table's reference run stands among
    its seeds. A paired test over users holds the trained models fixed; a
    difference smaller than a change of seed is not one to build on. None
    with fewer than two seeds stored."""
    values = [r.test_metrics[metric] for r in seeds if r is not None]
    if len(values) < 2 or reference not in table.index:
        return []
    std, base = float(np.std(values, ddof=1)), float(table.loc[reference, metric])
    others = table.drop(index=reference)[metric].dropna().astype(float)
    within = int((abs(others - base) < std).sum())
    rank = 1 + sum(v > base for v in values)
    place = ("the highest of them" if rank == 1 else "the lowest of them" if rank == len(values)
             else f"number {rank} of them from the top")
    return [f"{what}: {within} of {len(others)} rows lie within one seed standard deviation ({std:.4f}) of the "
            f"reference's {base:.4f}; over {len(values)} seeds the reference scores {min(values):.4f} to "
            f"{max(values):.4f}, and the table's run is {place}"]


def equal_time_found(table: pd.DataFrame, reference: str, what: str) -> list[str]:
    """A line on an ``equal_time_table`` (rows labelled by method): where
    ``reference`` stood when every run had trained for the table's time, as
    a share of its own best, against the highest run at that time; and the
    run's whole training time. None where ``reference`` is not a row."""
    if reference not in table.index:
        return []
    within = next(c for c in table.columns if c.startswith("valid NDCG@10 within"))
    seconds = within.removeprefix("valid NDCG@10 within ")
    row, leader = table.loc[reference], table[within].idxmax()
    return [f"{what}: within {seconds}, the training time every run reached, {reference} had reached validation "
            f"NDCG@10 {row[within]:.4f}, {100 * row[within] / row['best valid NDCG@10']:.0f}% of its best "
            f"({row['best valid NDCG@10']:.4f}; the run trained {row['training (s, total)']:.0f} s in all); the "
            f"highest then was {leader}'s {table.loc[leader, within]:.4f}"]


def gap_closed(reference, variant, control, what: str, names=("length buckets", "shuffled"),
               metric: str = "NDCG@20", alpha: float = 0.01) -> list[str]:
    """A line for "What we found" on a control placed between two runs (the
    ``reference`` and the ``variant`` that moved it, ``names`` of both): how
    far ``control`` lies from the variant back to the reference in
    ``metric``, as a share of the gap (100%: at the reference, 0%: at the
    variant; outside the gap it says beyond which), given only where the gap
    itself is significant at ``alpha`` (paired over the test users), and the
    control's paired test against each. "not all run yet" while any is
    missing."""
    from ..evaluation import paired_test
    if reference is None or variant is None or control is None:
        return [f"{what}: not all three run yet"]
    tests = [paired_test(control.test_ranks, other.test_ranks, metric) for other in (reference, variant)]
    gap = paired_test(reference.test_ranks, variant.test_ranks, metric)
    ours, ref, var = tests[0]["mean_a"], tests[0]["mean_b"], tests[1]["mean_b"]
    share = (ours - var) / (ref - var) if ref != var else np.nan
    closed = (f"the two do not differ significantly ({p_text(gap['p_wilcoxon'])}), so there is no gap to close"
              if gap["p_wilcoxon"] >= alpha or ref == var
              else f"it lies beyond {names[0]}, on the side away from {names[1]}" if share > 1
              else f"it lies beyond {names[1]}, on the side away from {names[0]}" if share < 0
              else f"it lies {100 * share:.0f}% of the way from {names[1]} back to {names[0]}")
    against = "; ".join(f"against {name} {relative_change(ours, t['mean_b']):+.1f}%, {p_text(t['p_wilcoxon'])} "
                        f"({significance_verdict(t['p_wilcoxon'], alpha)})"
                        for name, t in zip(names, tests))
    return [f"{what}: {metric} {ours:.4f}, against {ref:.4f} in {names[0]} and {var:.4f} in {names[1]}: "
            f"{closed}; {against}"]


def sweep_found(table: pd.DataFrame, reference: str, defaults: dict, what: str, metric: str = "NDCG@10",
                default_is: str | None = None, alpha: float = 0.01) -> list[str]:
    """Lines for "What we found" on a one-parameter-at-a-time sweep: per
    swept parameter (``defaults``: name -> its default value), the lowest
    and highest test ``metric`` over its values, the default's included
    (the ``reference`` row of an ``ablation_table`` whose other rows are
    labelled ``name=value`` or ``name = value``; every sweep shares it),
    how many values are run, and the spread in percent of the default's
    value; one line names the parameters with only the default run. With
    ``default_is`` (what the default is, e.g. "the paper's best") each line
    also says whether the default is the highest and, where another value
    is, whether the table's paired test (its "p") finds it above the default
    at ``alpha``."""
    run = table["status"] != "not run"
    if reference not in table.index or not run.get(reference, False):
        return [f"{what}: the default has not been run"]
    base = float(table.loc[reference, metric])
    lines, only_default = [], []
    for name, default in defaults.items():
        points, rows = {str(default): base}, {}
        for label, row in table[run].iterrows():
            key, _, value = label.partition("=")
            if key.strip() == name:
                points[value.strip()] = float(row[metric])
                rows[value.strip()] = row
        if len(points) < 2:
            only_default.append(f"{name} ({default})")
            continue
        low, high = min(points, key=points.get), max(points, key=points.get)
        if points[low] == points[high]:
            lines.append(f"{what}, {name} over {len(points)} values: test {metric} {base:.4f} at every value")
            continue
        spread = (f"a spread of {100 * (points[high] - points[low]) / base:.1f}% of the default's {base:.4f}"
                  if base > 0 else "the default scoring 0")
        line = (f"{what}, {name} over {len(points)} values: test {metric} from {points[low]:.4f} "
                f"({name} = {low}) to {points[high]:.4f} ({name} = {high}), {spread} ({name} = {default})")
        if default_is and high == str(default):
            line += f"; the default, {default_is}, is the highest"
        elif default_is:
            p = float(rows[high]["p"])
            line += (f"; the default is {default_is}, but {name} = {high} is "
                     f"{relative_change(points[high], base):+.1f}% above it, {p_text(p)} "
                     f"({significance_verdict(p, alpha)})")
        lines.append(line)
    if only_default:
        lines.append(f"{what}: only the default run yet for {', '.join(only_default)}")
    return lines


def ablation_gaps_found(beside: pd.DataFrame, reference: str, what: str) -> list[str]:
    """A line for "What we found" on a ``beside_paper_rows`` table of an
    ablation: how far the paper's rows lie from its full model (``reference``
    row, quoted) and how far ours lie from ours, each as the range of
    relative changes in percent over the rows we have run."""
    ours_column = next(c for c in beside.columns if c.startswith("ours "))
    quoted_column = next(c for c in beside.columns if c.startswith("quoted "))
    if reference not in beside.index or not np.isfinite(beside.loc[reference, ours_column]):
        return [f"{what}: the full model has not been run"]
    rows = beside.drop(reference)
    rows = rows[np.isfinite(rows[ours_column].astype(float)) & np.isfinite(rows[quoted_column].astype(float))]
    if rows.empty:
        return [f"{what}: no ablation row run yet"]
    ours = 100 * (rows[ours_column] / beside.loc[reference, ours_column] - 1)
    paper = 100 * (rows[quoted_column] / beside.loc[reference, quoted_column] - 1)
    metric = ours_column.removeprefix("ours ")
    return [f"{what}: against the full model, the paper's {len(rows)} rows change {metric} by {paper.min():+.1f}% "
            f"to {paper.max():+.1f}% (quoted), ours by {ours.min():+.1f}% to {ours.max():+.1f}%"]
