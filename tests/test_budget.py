"""What the study costs: the budget table's CPU-hours of stored runs and
the prices of the runs still to train, by their group's runs or by proxy
from an epoch's matmul work (``report.budget``)."""
from __future__ import annotations

import numpy as np
import pytest

from emkd_lib.report import budget
from helpers import needs_dataset


def test_budget_table_counts_shared_runs_once_and_prices_missing_ones_by_method_and_dataset():
    from types import SimpleNamespace as NS
    config = lambda dataset, method, precision="fp32", epochs=200, max_users=None, encoder="e", patience=5: NS(  # noqa: E731
        dataset=dataset, method=method, encoder=encoder, train=NS(precision=precision, epochs=epochs, patience=patience),
        data=NS(max_users=max_users))
    run = lambda key, seconds, threads=1, epochs=10, stopped_by="patience": NS(  # noqa: E731
        key=key, train_seconds=seconds - 100, eval_seconds=100, history=[{}] * epochs,
        flags={"stopped_by": stopped_by}, provenance={"machine": f"cpu x2, torch threads {threads}"})
    chapters = {
        "a": [("k1", config("beauty", "sasrec"), run("k1", 3600)),
              ("k2", config("beauty", "sasrec"), run("k2", 7200, threads=2)),
              ("k3", config("beauty", "sasrec"), None),
              ("k4", config("toys", "sasrec"), None)],
        "b": [("k1", config("beauty", "sasrec"), run("k1", 3600)),      # shared with a: counted there
              ("k3", config("beauty", "sasrec"), None),                 # missing in a too: counted there
              ("k5", config("beauty", "emkd"), run("k5", 1800)),
              ("k6", config("beauty", "emkd"), None)],
    }
    table = budget.budget_table(chapters)
    a, b, total = table.loc["a"], table.loc["b"], table.loc["total"]
    assert (a["runs"], a["stored"], a["not stored yet"]) == (4, 2, 2)
    assert a["hours (new runs)"] == pytest.approx(3.0) and a["CPU-hours (new runs)"] == pytest.approx(5.0)
    # k3 at the median of beauty/sasrec's 1 and 4 CPU-hours; toys/sasrec has no stored neighbour
    assert a["estimated CPU-hours to go"] == pytest.approx(2.5) and a["not priced"] == 1
    assert (b["runs"], b["stored"], b["not stored yet"], b["not priced"]) == (2, 1, 1, 0)
    assert b["estimated CPU-hours to go"] == pytest.approx(0.5)
    assert (total["runs"], total["stored"], total["not stored yet"]) == (6, 3, 3)
    # Every stored run on one thread: the wall hours equal the CPU-hours and are not shown twice.
    one_thread = budget.budget_table({"b": chapters["b"]})
    assert "hours (new runs)" not in one_thread and one_thread.loc["b", "CPU-hours (new runs)"] == pytest.approx(1.5)

    # bf16 runs: with a bf16 neighbour at its median; without one at the fp32
    # median over the measured speed-up, or at the fp32 median where none is measured
    chapters = {"c": [("k1", config("beauty", "sasrec"), run("k1", 3600)),
                      ("k2", config("beauty", "sasrec", "bf16"), None),
                      ("k3", config("beauty", "emkd"), run("k3", 7200)),
                      ("k4", config("beauty", "emkd", "bf16"), None),
                      ("k5", config("beauty", "gru4rec"), run("k5", 1800)),
                      ("k6", config("beauty", "gru4rec", "bf16"), run("k6", 900)),
                      ("k7", config("beauty", "gru4rec", "bf16"), None)]}
    c = budget.budget_table(chapters, bf16_speedup={"emkd": 1.6}).loc["c"]
    assert c["estimated CPU-hours to go"] == pytest.approx(1.0 + 2.0 / 1.6 + 0.25) and c["not priced"] == 0
    # fp32 runs beside bf16 ones only (the fallback on a CPU without bf16 units): at
    # the bf16 median times the speed-up, the encoder's own where one was measured
    chapters = {"f": [("k1", config("beauty", "emkd", "bf16"), run("k1", 3600)),
                      ("k2", config("beauty", "emkd"), None),
                      ("k3", config("beauty", "emkd", "bf16", encoder="sasrec"), run("k3", 1800)),
                      ("k4", config("beauty", "emkd", encoder="sasrec"), None),
                      ("k5", config("beauty", "gru4rec", "bf16"), run("k5", 900)),
                      ("k6", config("beauty", "gru4rec"), None)]}
    f = budget.budget_table(chapters, bf16_speedup={"emkd": 1.6, "emkd-sasrec": 1.2}).loc["f"]
    assert f["estimated CPU-hours to go"] == pytest.approx(1.0 * 1.6 + 0.5 * 1.2 + 0.25) and f["not priced"] == 0
    # and the other way, bf16 runs beside fp32 ones only, by the encoder's own speed-up too
    chapters = {"g": [("k1", config("beauty", "emkd", encoder="sasrec"), run("k1", 3600)),
                      ("k2", config("beauty", "emkd", "bf16", encoder="sasrec"), None)]}
    g = budget.budget_table(chapters, bf16_speedup={"emkd": 1.6, "emkd-sasrec": 1.2}).loc["g"]
    assert g["estimated CPU-hours to go"] == pytest.approx(1.0 / 1.2)

    # a sweep capped at 2 epochs costs 2 of its neighbours' 10 epochs; another
    # encoder or user sample has no neighbour, so it is not priced
    chapters = {"d": [("k1", config("beauty", "emkd"), run("k1", 3600)),
                      ("k2", config("beauty", "emkd", epochs=2), None),
                      ("k3", config("beauty", "emkd", encoder="other"), None),
                      ("k4", config("beauty", "emkd", max_users=3000), None)]}
    d = budget.budget_table(chapters).loc["d"]
    assert d["estimated CPU-hours to go"] == pytest.approx(0.2) and d["not priced"] == 2

    # runs a short cap ended (a sweep's 2 epochs) price an epoch, not how many
    # a converged run needs: the group's run that early stopping ended says that
    chapters = {"e": [("k1", config("beauty", "emkd"), run("k1", 3600)),
                      ("k2", config("beauty", "emkd", epochs=2), run("k2", 720, epochs=2, stopped_by="epoch cap")),
                      ("k3", config("beauty", "emkd", epochs=2), run("k3", 720, epochs=2, stopped_by="epoch cap")),
                      ("k4", config("beauty", "emkd"), None)]}
    # 0.1 CPU-hours an epoch (all three), 10 epochs (k1's; the median of all three would say 2)
    assert budget.budget_table(chapters).loc["e", "estimated CPU-hours to go"] == pytest.approx(1.0)
    # a run that the group's own (largest) cap ended ran its full length: its epochs count too
    chapters["e"][0] = ("k1", config("beauty", "emkd", epochs=30), run("k1", 10800, epochs=30, stopped_by="epoch cap"))
    chapters["e"][3] = ("k4", config("beauty", "emkd", epochs=30), None)
    # (0.1 + 0.1 + 0.1) CPU-hours an epoch, 30 epochs (k1's; without it the median of all would say 2)
    assert budget.budget_table(chapters).loc["e", "estimated CPU-hours to go"] == pytest.approx(3.0)

    # a patience check (patience 20 against its group's 5) continues a run that was still rising: four
    # times the group's 10 epochs, at most its cap; a shorter patience is not priced below the group's epochs
    chapters = {"f": [("k1", config("beauty", "emkd"), run("k1", 3600)),
                      ("k2", config("beauty", "emkd", patience=20), None),
                      ("k3", config("beauty", "emkd", patience=20, epochs=30), None),
                      ("k4", config("beauty", "emkd", patience=2), None)]}
    assert budget.budget_table(chapters).loc["f", "estimated CPU-hours to go"] == pytest.approx(4.0 + 3.0 + 1.0)



def test_a_run_without_neighbours_is_priced_by_proxy_from_its_epochs_work():
    """A group with nothing stored takes the same method, encoder and
    precision elsewhere, per unit of an epoch's work; another method does not price it."""
    from types import SimpleNamespace as NS
    config = lambda dataset, method, epochs=200: NS(  # noqa: E731
        dataset=dataset, method=method, encoder="e", train=NS(precision="fp32", epochs=epochs, patience=5),
        data=NS(max_users=None))
    run = lambda seconds, epochs=10: NS(train_seconds=seconds, eval_seconds=0.0, history=[{}] * epochs,  # noqa: E731
                                        flags={"stopped_by": "patience"},
                                        provenance={"machine": "cpu x2, torch threads 1"})
    work = {"beauty": 1000, "toys": 3000, "ml-1m": 8000}
    count = lambda c: work[c.dataset]  # noqa: E731
    chapters = {"a": [("k1", config("beauty", "sasrec"), run(3600)),          # 0.1 CPU-h per epoch, 10 epochs
                      ("k2", config("toys", "sasrec"), run(3 * 3600)),        # 0.3 per epoch: the same per unit of work
                      ("k3", config("ml-1m", "sasrec"), None),                # by proxy: 0.8 per epoch x 10
                      ("k4", config("ml-1m", "sasrec", epochs=2), None),      # capped: 0.8 x 2
                      ("k5", config("ml-1m", "emkd"), None)]}                 # no emkd anywhere: not priced
    with_proxy = budget.budget_table(chapters, work=count).loc["a"]
    assert with_proxy["estimated CPU-hours to go"] == pytest.approx(8.0 + 1.6)
    assert with_proxy["of which by proxy"] == pytest.approx(9.6) and with_proxy["not priced"] == 1
    without = budget.budget_table(chapters).loc["a"]
    assert without["estimated CPU-hours to go"] == 0 and without["not priced"] == 3
    assert "of which by proxy" not in without
    # grid --plan says which prices are proxies
    rows = [{"key": k, "config": c, "status": "stored" if r else "not started",
             "result": r and NS(test_metrics={"NDCG@10": 0.05}, train_seconds=r.train_seconds)}
            for k, c, r in chapters["a"]]
    prices = budget.run_prices([(c, r) for _, c, r in chapters["a"] if r is not None])
    lines = budget.plan_lines([k for k, _, _ in chapters["a"]], rows, prices,
                              budget.work_prices([(c, r) for _, c, r in chapters["a"] if r is not None], count), count)
    assert lines[2] == "not started   k3  about 8.0 CPU-h left (by proxy: matmul work)"
    assert lines[4] == "not started   k5" and lines[-1].endswith("about 9.6 CPU-hours left (1 not priced)")


@needs_dataset("beauty")
def test_epoch_work_sums_forward_macs_over_the_batches_a_run_trains_on():
    from emkd_lib.batching import length_bucketed_batches
    from emkd_lib.flops import forward_macs
    from emkd_lib.methods import build_method
    from emkd_lib.profiles import profile_config
    from emkd_lib.runs import run_data
    config = profile_config("cpu", "beauty", "sasrec", data__max_users=1000)   # several batches
    dataset, split = run_data(config)
    _, recipe = build_method(config, dataset)
    lengths = np.array([len(w) for w in recipe.make_examples(split.train)])
    n_attributes = dataset.attributes.n_attributes
    # the batches as the trainer draws them (shuffled length buckets)
    batches = length_bucketed_batches(lengths, config.train.batch_size, shuffle=True, rng=np.random.default_rng(3))
    expected = sum(forward_macs(config, dataset.n_items, n_attributes, lengths[b]) for b in batches)
    assert budget.epoch_work(config) == pytest.approx(expected, rel=1e-12) and expected > 0
    # consecutive windows in store order would pad short windows to long ones' width
    consecutive = sum(forward_macs(config, dataset.n_items, n_attributes, lengths[i:i + config.train.batch_size])
                      for i in range(0, len(lengths), config.train.batch_size))
    assert consecutive > expected
    # next-item scoring: every input position against the whole catalogue, so
    # the output layer alone is d x items per scored position
    scored = int((lengths - 1).sum())
    assert budget.epoch_work(config) > scored * config.encoder_config.hidden * dataset.n_items
    # longer windows: more work per token (attention spans the window)
    longer = config.replace(data__max_len=30)
    longer_tokens = sum(len(w) for w in build_method(longer, dataset)[1].make_examples(run_data(longer)[1].train))
    assert budget.epoch_work(longer) / longer_tokens > budget.epoch_work(config) / lengths.sum()
