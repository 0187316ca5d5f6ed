"""What the study costs, from the store: the recorded CPU-hours of each
chapter's stored runs, and the price of the runs still to train (the
performance chapter's study budget, ``grid --plan``)."""
from __future__ import annotations

import functools
import re
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..batching import training_batches
from ..methods import method_name
from ..runs import key_of, results_for


def machine_threads(machine: str) -> int:
    """The torch threads a run's provenance machine names ("... (torch
    threads 2)"), 1 where it names none: CPU-hours are wall hours times it."""
    m = re.search(r"threads (\d+)", machine or "")
    return int(m.group(1)) if m else 1


def study_budget(chapter_grids: dict[str, list[dict]], bf16_speedup: dict[str, float] | None = None,
                 work=None) -> pd.DataFrame:
    """``budget_table`` of the store: every config of each chapter's grids,
    with its run key and its stored run (or None)."""
    return budget_table({chapter: [(key_of(config), config, result) for grid in grids
                                   for config, result in zip(grid.values(), results_for(grid).values())]
                         for chapter, grids in chapter_grids.items()}, bf16_speedup, work)


def _cpu_hours(result) -> float:
    return (result.train_seconds + result.eval_seconds) * machine_threads(result.provenance.get("machine", "")) / 3600


class PriceGroup(NamedTuple):
    """What a stored run must share with a run to price it: what sets the cost
    of an epoch, bar the method's own parameters."""
    dataset: str
    method: str
    encoder: str
    precision: str
    max_users: int | None


class Price(NamedTuple):
    """A group's price of a run (``run_prices``, ``work_prices``)."""
    per_epoch: float      # median CPU-hours an epoch (per unit of work, for a proxy price)
    epochs: float         # median epochs of the group's runs that were not cut short
    patience: float       # median patience of those runs


def _price_group(config) -> PriceGroup:
    return PriceGroup(config.dataset, config.method, config.encoder, config.train.precision, config.data.max_users)


def run_prices(runs, bf16_speedup: dict[str, float] | None = None) -> dict[PriceGroup, Price]:
    """``PriceGroup -> Price`` (median CPU-hours per epoch, median epochs run) of
    the stored runs, given as ``(config, result)`` pairs: the price of a run
    not trained yet (``budget_table``, ``grid --plan``; look it up with
    ``price_of``, which caps the epochs at the run's own cap). Where a group
    has fp32 runs stored but no bf16 run, its bf16 runs are priced at the fp32
    rate over the measured bf16 speed-up (``bf16_speedup``: benchmark label
    -> factor; the method on another encoder, "emkd-gru4rec", where that
    was measured, else the method, "emkd"), or at the fp32 rate itself (an
    upper bound) where none was measured. Where it has bf16 runs but no fp32
    run, its fp32 runs are priced at the bf16 rate times that speed-up: fp32
    on the machine that measured it. Runs fall back to fp32 on CPUs without
    bf16 units (``studies.emkd.FALLBACK_PRECISION``), which can be slower in
    fp32 too, so that price is a lower bound. Either way such a price is the
    group's own, not a proxy (``work_prices``)."""
    price = _median_rates(runs, _price_group, lambda config: 1.0)
    speedups = bf16_speedup or {}
    for group, found in list(price.items()):
        speedup = speedups.get(method_name(group.method, group.encoder), speedups.get(group.method, 1.0))
        if group.precision == "fp32":
            price.setdefault(group._replace(precision="bf16"), found._replace(per_epoch=found.per_epoch / speedup))
        elif group.precision == "bf16":
            price.setdefault(group._replace(precision="fp32"), found._replace(per_epoch=found.per_epoch * speedup))
    return price


def _files_of(dataset: str) -> tuple:
    """What the caches below are keyed by beside their arguments: the names
    and sha256 of the files the dataset is read from (``data.dataset_files``),
    so another data location or an edited file is never served stale."""
    from ..data import dataset_files
    return tuple(sorted(dataset_files(dataset).items()))


def _training_windows(dataset: str, data) -> list:
    return _training_windows_of(dataset, data, _files_of(dataset))


@functools.lru_cache(maxsize=None)
def _training_windows_of(dataset: str, data, files: tuple) -> list:
    from ..runs import dataset_and_split
    _, split = dataset_and_split(dataset, data)
    return data.examples(split.train, window=data.max_len)


def epoch_work(config) -> float | None:
    """The useful forward multiply-accumulates of one epoch of ``config``
    (``flops.forward_macs`` over its training windows, in the trainer's
    batches of its ``batch_order``): the unit of the proxy price (``work_prices``). Unlike the
    windows' items alone it grows with the catalogue (every scored position
    is scored against every item) and with the window length (attention):
    an ML-1M window scores 3,416 items, a Beauty one 12,101. None for an
    encoder ``flops`` does not count (the ODMT chapter's)."""
    try:
        return _epoch_work(config, _files_of(config.dataset))
    except ValueError:
        return None


@functools.lru_cache(maxsize=None)
def _epoch_work(config, files: tuple) -> float:
    from ..flops import forward_macs
    from ..runs import dataset_and_split
    dataset, _ = dataset_and_split(config.dataset, config.data)
    n_attributes = dataset.attributes.n_attributes if dataset.attributes is not None else 0
    lengths = np.array([len(w) for w in _training_windows(config.dataset, config.data)])
    # Length buckets: chunks of the windows sorted by length (their order and
    # ties shuffle, their lengths do not), so this is the trainer's epoch
    # exactly; shuffled batches: one draw of them, which the others match to
    # within a batch's padding.
    batches = training_batches(lengths, config.train.batch_size, config.train.batch_order, np.random.default_rng(0))
    return float(sum(forward_macs(config, dataset.n_items, n_attributes, lengths[batch]) for batch in batches))


def work_prices(runs, work=epoch_work) -> "_LazyRates":
    """``(method, encoder, precision) -> Price`` (median CPU-hours per epoch
    per unit of ``work``, median epochs run) of the stored ``(config, result)``
    pairs, over every dataset and user sample: the proxy price of a run whose
    own ``PriceGroup`` has nothing stored (``price_of``). It assumes an
    epoch's cost grows with its useful matmul work (``epoch_work``), which
    leaves out what does not scale with it (per-operator overhead at small
    batches, a GRU's steps in time), so it is a first-order estimate.

    Computed per group when ``price_of`` first asks for it: an epoch's work
    needs its dataset's windows, so only the groups a plan prices by proxy
    pay for them."""
    return _LazyRates(runs, work)


class _LazyRates:
    """``work_prices``' mapping: ``get(group)`` computes a group's rate on first use."""

    def __init__(self, runs, work):
        self._runs, self._work, self._rates = list(runs), work, {}

    def get(self, group, default=None):
        if group not in self._rates:
            pairs = [(c, r) for c, r in self._runs if _proxy_group(c) == group]
            self._rates[group] = _median_rates(pairs, _proxy_group, self._work).get(group)
        found = self._rates[group]
        return default if found is None else found


def _proxy_group(config) -> tuple:
    return config.method, config.encoder, config.train.precision


def _median_rates(runs, group_of, per) -> dict[tuple, Price]:
    """``group -> Price`` (median CPU-hours per epoch per ``per(config)``,
    median epochs run, their runs' median patience) of ``(config, result)``
    pairs grouped by ``group_of`` (a config whose ``per`` is None or 0 is
    left out). The epochs are those of the group's runs that were not cut
    short, where it has any: ended by early stopping, or by the largest
    epoch cap of the group's configs. A run ended by a shorter cap (a
    sensitivity sweep's few epochs) says how long an epoch takes, not how
    many a converged run needs."""
    # ``per`` once a run (an epoch's work is counted from its batches); uncountable work prices nothing.
    runs = [(config, result, unit) for config, result in runs if (unit := per(config))]
    top_cap: dict[tuple, int] = {}
    for config, _, _ in runs:
        group = group_of(config)
        top_cap[group] = max(top_cap.get(group, 0), config.train.epochs)
    rates: dict[tuple, list[float]] = {}
    epochs: dict[tuple, list[tuple[int, int]]] = {}
    converged: dict[tuple, list[tuple[int, int]]] = {}
    for config, result, unit in runs:
        group, n = group_of(config), max(len(result.history), 1)
        rates.setdefault(group, []).append(_cpu_hours(result) / n / unit)
        epochs.setdefault(group, []).append((n, config.train.patience))
        if result.flags.get("stopped_by") == "patience" or config.train.epochs >= top_cap[group]:
            converged.setdefault(group, []).append((n, config.train.patience))
    prices = {}
    for group in rates:
        counted = np.array(converged.get(group) or epochs[group], dtype=float)
        prices[group] = Price(float(np.median(rates[group])), *map(float, np.median(counted, axis=0)))
    return prices


def price_of(prices: dict, config, by_work: dict | None = None, work=epoch_work) -> float | None:
    """The CPU-hours ``run_prices`` expects ``config`` to cost: its group's
    rate per epoch times the group's median epochs, at most ``config``'s
    epoch cap (a short sweep costs its few epochs). A run with a longer
    patience than its group's runs (a patience check) is priced at their
    epochs times the ratio of the patiences: such a check continues a run
    that was still rising when patience stopped it, which trains on for
    about as long again per evaluation of patience. Where its group has
    nothing stored, the same method, encoder and precision elsewhere
    (``by_work``, from ``work_prices``) price it by its epoch's work; None
    where neither does."""
    found, unit = prices.get(_price_group(config)), 1.0
    if found is None and by_work:
        found, unit = by_work.get(_proxy_group(config)), work(config)
    if found is None or unit is None:
        return None
    epochs = found.epochs * max(1.0, config.train.patience / found.patience)
    return found.per_epoch * unit * min(epochs, config.train.epochs)


def is_proxy_priced(prices: dict, config) -> bool:
    """Whether ``price_of`` prices ``config`` by proxy (no stored run of its own group)."""
    return _price_group(config) not in prices


def plan_lines(keys, rows: list[dict], prices: dict, by_work: dict | None = None,
               work=epoch_work) -> list[str]:
    """``grid --plan``'s lines: one per run of ``runs.grid_progress`` rows
    (named by its grid key ``keys``; a run that two keys share, e.g. a
    sensitivity grid's default, is counted once), then the counts and the
    CPU-hours left: each run at its ``price_of`` price (by proxy from
    ``by_work`` where its own group has nothing stored, said so on its
    line), less, for a checkpointed run, its hours so far (a campaign trains
    on one thread); a run that nothing prices is counted as not priced."""
    lines, left, unpriced, first = [], 0.0, 0, {}
    for key, row in zip(keys, rows):
        config, status = row["config"], row["status"]
        name = " ".join(map(str, key if isinstance(key, tuple) else (key,)))
        if row["key"] in first:
            lines.append(f"{'same run':<13} {name}  (as {first[row['key']]})")
            continue
        first[row["key"]] = name
        price = price_of(prices, config, by_work, work)
        proxy = price is not None and is_proxy_priced(prices, config)
        if status == "stored":
            result = row["result"]
            detail = f"test NDCG@10 {result.test_metrics['NDCG@10']:.4f} ({result.train_seconds:.0f} s)"
        elif status == "checkpointed":
            p = row["progress"]
            detail = (f"epoch {p['epoch']}, best {p['best_epoch']} (valid NDCG@10 {p['best_valid_ndcg10']:.4f}), "
                      f"{p['seconds'] / 3600:.1f} h so far, saved {row['saved']}")
            if price is not None:
                price = max(price - p["seconds"] / 3600, 0.0)
        else:
            detail = ""
        if status != "stored":
            if price is None:
                unpriced += 1
            else:
                left += price
                detail += (f"{'; ' if detail else ''}about {price:.1f} CPU-h left"
                           + (" (by proxy: matmul work)" if proxy else ""))
        lines.append(f"{status:<13} {name}{'  ' + detail if detail else ''}")
    distinct = list({row["key"]: row for row in rows}.values())
    counts = {s: sum(r["status"] == s for r in distinct) for s in ("stored", "checkpointed", "not started")}
    lines.append(f"{len(distinct)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items())
                 + f"; about {left:.1f} CPU-hours left" + (f" ({unpriced} not priced)" if unpriced else ""))
    return lines


def budget_table(chapter_runs: dict[str, list[tuple]], bf16_speedup: dict[str, float] | None = None,
                 work=None) -> pd.DataFrame:
    """Per chapter, from its ``(run key, config, stored run or None)``
    triples: its runs (distinct keys), how many are stored, their recorded
    training + evaluation CPU-hours (wall time x the run's torch threads;
    the wall hours too where some run used more than one thread), the runs
    not stored yet, and what those would cost: each
    priced from the stored runs of the same method and encoder on the same
    dataset (and user sample) at the same precision (``run_prices``: their
    median CPU-hours per epoch times their median epochs, at most the run's
    cap; a bf16 run with only fp32 neighbours at their rate over
    ``bf16_speedup``). With ``work`` (``epoch_work``), a run with no
    such neighbour is priced by proxy, from the same method, encoder and
    precision on other data scaled by its epoch's matmul work
    (``work_prices``), and those CPU-hours are also shown apart; a run
    that neither prices is counted as not priced. A run shared by several
    chapters counts in the first."""
    by_key = {key: (config, result) for runs in chapter_runs.values() for key, config, result in runs}
    stored_pairs = [(config, result) for config, result in by_key.values() if result is not None]
    price = run_prices(stored_pairs, bf16_speedup)
    by_work = work_prices(stored_pairs, work) if work else None
    rows, seen = [], set()
    for chapter, runs in chapter_runs.items():
        keys = list(dict.fromkeys(key for key, _, _ in runs))
        fresh = [k for k in keys if k not in seen]   # counted in an earlier chapter: not again
        seen.update(keys)
        stored = [by_key[k][1] for k in fresh if by_key[k][1] is not None]
        missing = [by_key[k][0] for k in fresh if by_key[k][1] is None]
        to_go = [price_of(price, config, by_work, work) for config in missing]
        proxied = [p for p, config in zip(to_go, missing) if p is not None and is_proxy_priced(price, config)]
        row = {"chapter": chapter, "runs": len(fresh), "stored": len(stored),
               "hours (new runs)": sum(r.train_seconds + r.eval_seconds for r in stored) / 3600,
               "CPU-hours (new runs)": sum(map(_cpu_hours, stored)),
               "not stored yet": len(to_go),
               "estimated CPU-hours to go": sum(p for p in to_go if p is not None)}
        if work:
            row["of which by proxy"] = sum(proxied)
        rows.append({**row, "not priced": sum(p is None for p in to_go)})
    table = pd.DataFrame(rows).set_index("chapter")
    table.loc["total"] = table.sum(numeric_only=True)
    if np.allclose(table["hours (new runs)"], table["CPU-hours (new runs)"]):
        # every stored run used one thread: the wall hours would repeat the CPU-hours
        table = table.drop(columns="hours (new runs)")
    return table
