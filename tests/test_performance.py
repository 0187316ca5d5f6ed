"""The performance chapter's parsers read the benchmark scripts' own output."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emkd_lib.report import performance as perf

PROFILE = """\
# step_profile.py output, 2026-12-02, commit abc, test machine
$ python benchmarks/step_profile.py --top-ops 2
step profile on CPU x2 (torch threads 1); torch 2; threads 1

emkd beauty [cpu]: batch 4 x 3 items, d=8, N=3 networks, M=2 views; mean of 2 step(s) after 1 warm-up step(s)
  part                                 ms/step      %
  attention (LN, QKV, SDPA, proj)         30.0   30.0
      aten::bernoulli_                              10.0
      aten::baddbmm                                  5.0
  feed-forward (LN, FFN, GELU)            20.0   20.0
      aten::bernoulli_                              12.5
      aten::gelu                                     2.0
  backward                                50.0   50.0
      aten::bmm                                     40.0
  total (profiled)                       100.0  100.0
  wall, same steps unprofiled            140.0
  backward by autograd node (largest 8; % of backward):
      MmBackward                                    40.0   80.0

sasrec beauty [cpu]: batch 4 x 3 items, d=8; mean of 2 step(s) after 1 warm-up step(s)
  part                                 ms/step      %
  output logits (scored positions)         6.0   60.0
      aten::bmm                                      6.0
  backward                                 4.0   40.0
      aten::bernoulli_                               1.0
  total (profiled)                        10.0  100.0
"""

THROUGHPUT = """\
# train_throughput.py outputs, 2026-11-25, commit 409a5ac, test machine
$ python benchmarks/train_throughput.py --dataset beauty --profile cpu --methods sasrec
machine: AMD EPYC x2 (torch threads 2); torch 2.13.0+cpu; threads 2
measured fp32 matmul peak: 100.0 GFLOP/s
sasrec    beauty [cpu]:     2116 sequences/s,    10.6 s/epoch (22512 training sequences, 88 batches), 52.1 GFLOP/s = 52.1% of peak
$ python benchmarks/train_throughput.py --dataset beauty --profile cpu --methods sasrec --malloc-default
sasrec    beauty [cpu]:     3000 sequences/s,     8.0 s/epoch (22512 training sequences, 88 batches), 60.0 GFLOP/s = 60.0% of peak
"""


def _found(targets=None, dropout=None, clustering=None) -> list[str]:
    """``performance_found`` with the given tables and every other one empty."""
    none = pd.DataFrame({"status": ["nothing"]})
    budget = pd.DataFrame({"runs": [1], "stored": [1], "CPU-hours (new runs)": [1.0], "not stored yet": [0]},
                          index=["total"])
    return perf.performance_found(none if targets is None else targets, budget, none,
                                  pd.DataFrame() if dropout is None else dropout, none,
                                  pd.DataFrame(columns=["target", "measured", "met"]),
                                  none if clustering is None else clustering)


@pytest.fixture
def profile_file(tmp_path):
    path = tmp_path / "profiled-test.txt"
    path.write_text(PROFILE)
    return path


def test_step_profile_table_has_every_part_and_no_total_or_operator(profile_file):
    table = perf.step_profile_table(profile_file)
    emkd = table[table.method == "emkd"]
    assert list(emkd.part) == ["attention (LN, QKV, SDPA, proj)", "feed-forward (LN, FFN, GELU)", "backward"]
    assert list(emkd["ms / step"]) == [30.0, 20.0, 50.0] and emkd["% of step"].sum() == 100.0
    assert list(table[table.method == "sasrec"].part) == ["output logits (scored positions)", "backward"]


def test_operator_share_sums_the_operator_over_parts_against_the_total(profile_file):
    share = perf.operator_share(profile_file, "aten::bernoulli_").set_index("method")
    assert share.loc["emkd", "ms / step (at least)"] == 22.5
    assert share.loc["emkd", "% of step (at least)"] == pytest.approx(22.5)
    assert share.loc["sasrec", "% of step (at least)"] == pytest.approx(10.0)
    assert set(share["file"]) == {profile_file.name} and set(share["machine"]) == {"CPU"}


def test_dropout_lines_name_each_profiles_cpu_type_and_say_when_they_differ(tmp_path):
    paths = []
    for name, machine in (("amd.txt", "AMD EPYC"), ("intel.txt", "Intel Xeon")):
        paths.append(tmp_path / name)
        paths[-1].write_text(PROFILE.replace("step profile on CPU", f"step profile on {machine}"))
    shares = [perf.operator_share(path, "aten::bernoulli_") for path in paths]
    assert set(shares[0]["machine"]) == {"AMD EPYC"} and set(shares[1]["machine"]) == {"Intel Xeon"}
    one = _found(dropout=shares[0])
    assert "EMKD: dropout's random masks (aten::bernoulli_) took at least 22.5% of a step in amd.txt (AMD EPYC)" in one
    assert not any("CPU types" in line for line in one)
    none_seen = shares[0].assign(**{"% of step (at least)": 0.0})
    assert not any("dropout's random masks" in line for line in _found(dropout=none_seen))
    both = _found(dropout=pd.concat(shares))
    assert both[-1] == ("the dropout profiles ran on 2 CPU types (AMD EPYC, Intel Xeon): their shares differ by "
                        "machine as well as by the masks' draw, so the change's own effect on a step is the "
                        "alternated measurement on one machine")


NODES = """\
emkd beauty [cpu]: batch 256 x 15 items, d=64
  part                                 ms/step      %
  backward                                50.0   50.0
  optimizer (zero_grad + Adam)             2.0    2.0
      aten::_fused_adam_                             1.5
  other forward                           48.0   48.0
  total (profiled)                       100.0  100.0
  backward by autograd node (largest 2; % of backward):
      MmBackward                                    40.0   80.0
      GeluBackward                                   2.0    4.0
sasrec beauty [cpu]: batch 256 x 15 items, d=64
  backward                                60.0   60.0
  optimizer (zero_grad + Adam)             1.0    1.0
  other forward                           39.0   39.0
  total (profiled)                       100.0  100.0
  backward by autograd node (largest 2; % of backward):
      MmBackward                                    54.0   90.0
      EmbeddingBackward                              0.6    1.0
"""


def test_sparse_update_bound_is_the_optimizer_and_the_embedding_backward(tmp_path):
    path = tmp_path / "profiled-nodes.txt"
    path.write_text(NODES)
    bound = perf.sparse_update_bound(path).set_index("method")
    # SASRec lists its embedding node: 1% of a backward that is 60% of the step
    assert bound.loc["sasrec", "embedding backward % of step"] == pytest.approx(0.6)
    assert bound.loc["sasrec", "bound % of step"] == pytest.approx(1.6)
    # EMKD does not: the smallest listed node (4% of a 50% backward) bounds it
    assert not bound.loc["emkd", "embedding backward listed"]
    assert bound.loc["emkd", "bound % of step"] == pytest.approx(2.0 + 2.0)
    sentence = perf.sparse_update_sentence(bound.reset_index(), "profiled-nodes.txt")
    assert "EMKD below 4.0%, SASRec 1.6% of the profiled step" in sentence
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    assert "has no optimizer" in perf.sparse_update_sentence(perf.sparse_update_bound(empty), "empty.txt")


@pytest.mark.parametrize("parse,message", [(perf.step_profile_table, "no step profile"),
                                           (perf.clustering_table, "no clustering line"),
                                           (perf.feature_extraction_table, "no extraction line")])
def test_a_file_without_its_lines_says_so(tmp_path, parse, message):
    path = tmp_path / "empty.txt"
    path.write_text("# nothing\n")
    assert message in parse(path)["status"][0]


def test_benchmark_lines_and_targets_skip_the_malloc_default_runs(tmp_path):
    path = tmp_path / "measured-test.txt"
    path.write_text(THROUGHPUT)
    lines = perf.benchmark_table([path])
    assert len(lines) == 2 and lines["peak GFLOP/s"].iloc[0] == 100.0
    assert lines["% of fp32 peak"].tolist() == [52.1, 60.0]
    targets = perf.target_table(lines)
    # the faster line was measured with --malloc-default, not the library's default options
    assert targets.loc["sasrec", "measured % of peak"] == 52.1 and targets.loc["sasrec", "met"] == "yes"
    # the CPU and its peak, beside the share they make
    assert targets.loc["sasrec", "measured in"] == "measured-test.txt (AMD EPYC, fp32 peak 100 GFLOP/s)"
    assert targets.loc["emkd", "met"] == "not measured"


COMPARED = """\
# public_pattern.py and recbole_peer.py outputs, test machine
$ python benchmarks/public_pattern.py --batch-size 64
beauty [paper] d=256, N=3, M=8, T=15, batch 64; 192 sequences timed per side
  library (batched, masked logits)      415.6 sequences/s,        2 s/epoch, peak RSS  0.40 GiB
  public code's pattern                  48.8 sequences/s,       13 s/epoch, peak RSS 11.26 GiB
  target: library >= 5x the pattern: 8.52x (met)
  target: library peak RSS <= 4 GiB: 4.50 GiB (not met)
$ python benchmarks/recbole_peer.py --batches 30
  library             3186 target positions/s (    683 examples/s; 4.7 targets per example)
  RecBole 1.2.1        698 target positions/s (    698 examples/s; 1.0 targets per example)
  library / RecBole, target positions per second: 4.56x
"""


def test_comparison_tables_read_both_benchmarks(tmp_path):
    path = tmp_path / "compared-test.txt"
    path.write_text(COMPARED)
    sides, targets = perf.comparison_tables([path])
    assert list(sides.side) == ["library (batched, masked logits)", "public code's pattern", "library",
                                "RecBole 1.2.1"]
    assert sides["sequences/s"].iloc[1] == 48.8 and sides["peak RSS (GiB)"].iloc[1] == 11.26
    assert sides["target positions/s"].iloc[3] == 698 and sides["peak RSS (GiB)"].isna().iloc[3]
    assert list(targets.met) == ["met", "not met", ""]
    assert list(targets.measured) == ["8.52x", "4.50 GiB", "4.56x"]
    assert targets.benchmark.iloc[2] == "recbole_peer.py --batches 30"
    later = tmp_path / "compared-test2.txt"
    command = "$ python benchmarks/public_pattern.py --batch-size 64"
    later.write_text(COMPARED.replace("8.52x (met)", "2.23x (not met)").replace(command, command + "  # a comment"))
    both = perf.comparison_tables([later, path])[1]
    assert list(both.file) == ["compared-test.txt"] * 3 + ["compared-test2.txt"] * 3
    assert list(both.measured) == ["8.52x", "4.50 GiB", "4.56x", "2.23x", "4.50 GiB", "4.56x"]
    assert both.benchmark.iloc[3] == "public_pattern.py --batch-size 64"


def test_clustering_table_reads_each_methods_line(tmp_path):
    path = tmp_path / "clustering-test.txt"
    path.write_text("# header\n$ python benchmarks/clustering_share.py\n"
                    "s4rec    beauty [cpu]:    207.4 s/epoch of training (86 batches, 20 timed), clustering    "
                    "0.20 s/epoch =  0.10% of the epoch (Sinkhorn in every step)\n"
                    "iclrec   beauty [cpu]:    119.3 s/epoch of training (172 batches, 20 timed), clustering   "
                    "11.75 s/epoch =  8.97% of the epoch (K-means once per epoch (encoding + fit))\n")
    table = perf.clustering_table(path).set_index("method")
    assert table.loc["s4rec", "clustering s / epoch"] == 0.20 and table.loc["iclrec", "% of the epoch"] == 8.97
    assert table.loc["iclrec", "clustering"] == "K-means once per epoch (encoding + fit)"
    # K-means runs before the epoch's steps and adds to it; Sinkhorn runs inside them
    assert table.loc["iclrec", "epoch s (clustering included)"] == pytest.approx(119.3 + 11.75)
    assert table.loc["s4rec", "epoch s (clustering included)"] == 207.4
    found = _found(clustering=perf.clustering_table(path))
    assert found[-1] == ("on beauty an S⁴Rec epoch takes 1.58x ICLRec's (207 against 131 s, clustering included): "
                         "its clustering is the cheaper, its epoch is not")
    assert "ICLRec on beauty: clustering (K-means once per epoch (encoding + fit)) takes 8.97% of an epoch " \
           "(11.75 of 131 s)" in found
    one = perf.clustering_table(path).iloc[:1]     # S4Rec alone: nothing to set its epoch against
    assert not any("epoch takes" in line for line in _found(clustering=one))


def test_a_measurement_under_load_is_shown_but_not_counted_against_a_target(tmp_path):
    idle = tmp_path / "measured-a.txt"
    idle.write_text(THROUGHPUT)
    loaded = tmp_path / "measured-b.txt"
    loaded.write_text("# loaded\n$ python benchmarks/train_throughput.py --autocast bf16\n"
                      "WARNING: 1-minute load average 3.81 > 1: other processes share this machine\n"
                      "measured fp32 matmul peak: 50.0 GFLOP/s\n"
                      "sasrec    beauty [cpu]:     591 sequences/s,    74.1 s/epoch (43793 training sequences, "
                      "172 batches of 256; timed 20),   36.3 GFLOP/s = 72.6% of peak\n"
                      "sasrec[bf16] beauty [cpu]:     1343 sequences/s,    32.6 s/epoch (43793 training sequences, "
                      "172 batches of 256; timed 20),   59.6 GFLOP/s = 117.6% of peak\n"
                      "             bf16 autocast speed-up over fp32 on the same batches: 2.27x (share of the "
                      "fp32 peak)\n")
    lines = perf.benchmark_table([idle, loaded])
    assert lines["load"].isna().tolist() == [True, True, False, False]
    assert perf.target_table(lines).loc["sasrec", "measured % of peak"] == 52.1   # not the loaded 72.6
    speedups = perf.bf16_speedups([idle, loaded])
    assert speedups[["method", "bf16 speed-up"]].values.tolist() == [["sasrec", 2.27]]
    newer = tmp_path / "measured-c.txt"
    newer.write_text(loaded.read_text().replace("2.27x", "1.90x"))
    assert perf.latest_bf16_speedups([newer, idle, loaded]) == {"sasrec": 1.90}
    assert perf.latest_bf16_speedups([idle]) == {}
    # a newer file from a CPU without bf16 units (bf16 matmuls slower than fp32) prices nothing
    no_units = tmp_path / "measured-d.txt"
    no_units.write_text(newer.read_text().replace("1.90x", "0.08x").replace(
        "peak: 50.0 GFLOP/s", "peak: 43.2 GFLOP/s; bf16: 0.1 GFLOP/s (not faster than fp32 here: training stays fp32)"))
    assert perf.bf16_speedups([no_units])["bf16 speed-up"].tolist() == [0.08]
    assert perf.latest_bf16_speedups([newer, idle, loaded, no_units]) == {"sasrec": 1.90}
    with_units = tmp_path / "measured-e.txt"
    with_units.write_text(no_units.read_text().replace("bf16: 0.1 GFLOP/s", "bf16: 90.0 GFLOP/s"))
    assert perf.latest_bf16_speedups([newer, no_units, with_units]) == {"sasrec": 0.08}
    as_fast = tmp_path / "measured-f.txt"     # not above the fp32 peak either
    as_fast.write_text(no_units.read_text().replace("bf16: 0.1 GFLOP/s", "bf16: 43.2 GFLOP/s"))
    assert perf.latest_bf16_speedups([newer, as_fast]) == {"sasrec": 1.90}


def test_performance_found_reads_every_table_and_skips_the_missing_ones(tmp_path, profile_file):
    import pandas as pd
    idle = tmp_path / "measured-a.txt"
    idle.write_text(THROUGHPUT)
    budget = pd.DataFrame({"runs": [3], "stored": [1], "CPU-hours (new runs)": [2.5], "not stored yet": [2]},
                          index=["total"])
    none = pd.DataFrame({"status": ["nothing"]})
    lines = perf.performance_found(perf.target_table(perf.benchmark_table([idle])), budget,
                                   perf.step_profile_table(profile_file),
                                   perf.operator_share(profile_file, "aten::bernoulli_"), none,
                                   pd.DataFrame(columns=["target", "measured", "met"]), none)
    assert lines[0] == "SASRec: best measured 52.1% of the fp32 peak against a target of 50% (met)"
    assert "1 of 3 planned runs are stored; they cost 2.5 CPU-hours" in lines[1]
    priced = budget.assign(**{"estimated CPU-hours to go": [7.0], "of which by proxy": [4.0], "not priced": [1]})
    line = perf.performance_found(perf.target_table(perf.benchmark_table([idle])), priced,
                                  perf.step_profile_table(profile_file),
                                  perf.operator_share(profile_file, "aten::bernoulli_"), none,
                                  pd.DataFrame(columns=["target", "measured", "met"]), none)[1]
    assert line.endswith("would cost about 7 CPU-hours more (4 of these CPU-hours priced by proxy, 1 run not priced)")
    assert any(line.startswith("EMKD: the largest parts of a step are backward (50%)") for line in lines)
    assert (f"EMKD: dropout's random masks (aten::bernoulli_) took at least 22.5% of a step in {profile_file.name} "
            "(CPU)") in lines


def test_feature_extraction_table_reads_the_extractors_summary_lines(tmp_path):
    path = tmp_path / "features-test.txt"
    path.write_text("# header\n$ python -m emkd_lib.data.features ml-100k\n"
                    "ml-100k: 1682 items in 95.4 s -> /tmp/c/features/ml-100k/3669 (12.3 MiB)\n"
                    "  text_tokens: (1683, 32, 384) float16\n"
                    "beauty: 12101 items in 301.0 s -> /tmp/c/features/beauty/ab12 (60.0 MiB)\n")
    table = perf.feature_extraction_table(path)
    assert table.loc["ml-100k", "items"] == 1682 and table.loc["beauty", "seconds"] == 301.0
    assert table.loc["ml-100k", "cache (MiB)"] == 12.3 and len(table) == 2


def test_compile_speedups_read_each_methods_line_and_the_load(tmp_path):
    path = tmp_path / "measured-c.txt"
    path.write_text("""# header
$ python benchmarks/train_throughput.py --methods sasrec emkd --compile
WARNING: 1-minute load average 2.50 > 1: other processes share this machine
measured fp32 matmul peak: 100.0 GFLOP/s
sasrec    beauty [cpu]:     2000 sequences/s,    10.0 s/epoch (100 training sequences, 2 batches), 30.0 GFLOP/s = 30.0% of peak
sasrec[compiled] beauty [cpu]:     2100 sequences/s,     9.5 s/epoch (100 training sequences, 2 batches), 31.5 GFLOP/s = 31.5% of peak
             torch.compile speed-up over eager on the same batches, both after one pass, the compiling one (it took 48 s): 1.05x
emkd      beauty [cpu]:      300 sequences/s,    80.0 s/epoch (100 training sequences, 2 batches), 20.0 GFLOP/s = 20.0% of peak
emkd[compiled] beauty [cpu]:      290 sequences/s,    82.0 s/epoch (100 training sequences, 2 batches), 19.4 GFLOP/s = 19.4% of peak
             torch.compile speed-up over eager on the same batches, both after one pass, the compiling one (it took 61 s): 0.97x
""")
    table = perf.compile_speedups([path])
    assert list(table["method"]) == ["sasrec", "emkd"]
    assert list(table["compile speed-up"]) == [1.05, 0.97] and list(table["compiling pass (s)"]) == [48.0, 61.0]
    assert list(table["load"]) == [2.5, 2.5]
    # the compiled lines are not the method's own: no target counts them
    assert "sasrec[compiled]" in set(perf.benchmark_table([path])["method"])
    assert list(perf.compile_speedups([]).columns) == ["status"]
    (line,) = perf.compile_found(table)
    assert line == ("torch.compile against eager on the same batches: SASRec 1.05x, EMKD 0.97x (measured-c.txt, "
                    "load 2.5): none reaches 1.2x, so the core trains eagerly")
    faster = table.assign(**{"compile speed-up": [1.25, 0.97]})
    assert perf.compile_found(faster)[0].endswith("): worth keeping for SASRec")
    assert perf.compile_found(perf.compile_speedups([])) == []

def test_step_seconds_by_machine_takes_the_median_per_cpu_and_the_ratio_reads_it():
    from types import SimpleNamespace as NS

    from emkd_lib.profiles import profile_config
    sasrec, emkd = profile_config("cpu", "beauty", "sasrec"), profile_config("cpu", "beauty", "emkd")

    def run(config, seconds, steps, cpu, threads=1):
        return NS(config=config, train_seconds=seconds, history=[{"steps": steps // 2}, {"steps": steps}],
                  provenance={"machine": f"{cpu} x2 (torch threads {threads})"})

    runs = [run(sasrec, 100, 100, "Zen"), run(sasrec, 300, 100, "Zen"), run(sasrec, 100, 50, "Xeon"),
            run(emkd, 600, 100, "Zen"), run(emkd, 1800, 100, "Xeon"),
            run(emkd, 50, 100, "Xeon", threads=2),                     # two threads: not a campaign step
            NS(config=emkd, train_seconds=1.0, history=[{}], provenance={"machine": "Xeon x2 (torch threads 1)"})]
    table = perf.step_seconds_by_machine(runs)
    assert table.loc[("beauty", "SASRec", "all"), "Zen (s / step)"] == pytest.approx(2.0)      # median of 1 and 3
    assert table.loc[("beauty", "SASRec", "all"), "Zen (runs)"] == 2
    assert table.loc[("beauty", "SASRec", "all"), "Xeon (s / step)"] == pytest.approx(2.0)
    assert table.loc[("beauty", "EMKD", "all"), "Xeon (s / step)"] == pytest.approx(18.0)
    assert table.loc[("beauty", "EMKD", "all"), "Xeon (runs)"] == 1
    (line,) = perf.machine_ratio_found(table)
    assert line.startswith("a campaign step on the Xeon took, against the Zen: beauty / EMKD 3.00x, "
                           "beauty / SASRec 1.00x")
    one_cpu = perf.step_seconds_by_machine(runs[:2])
    assert perf.machine_ratio_found(one_cpu) == ["step cost by machine: the stored runs come from one CPU only"]


def test_stored_throughput_reads_epochs_windows_and_the_kernel_share():
    from types import SimpleNamespace as NS

    from emkd_lib.profiles import profile_config
    config = profile_config("cpu", "beauty", "sasrec")
    recorded = NS(config=config, history=[{}] * 4, train_seconds=200.0,
                  provenance={"machine": "Zen x2 (torch threads 1)", "examples_per_epoch": 1000,
                              "process_seconds": {"user": 150.0, "system": 50.0}})
    older = NS(config=config.replace(seed=1), history=[{}] * 2, train_seconds=100.0,
               provenance={"machine": "Zen x2 (torch threads 2)", "examples_per_epoch": 1000})
    table = perf.stored_throughput([recorded, older]).reset_index()
    first, second = table.iloc[0], table.iloc[1]
    assert (first["epochs"], first["s / epoch"], first["windows / s"]) == (4, 50.0, 20.0)
    assert first["kernel % of CPU"] == pytest.approx(25.0)
    assert second["threads"] == 2 and np.isnan(second["kernel % of CPU"])


MEMORY = """# header
emkd beauty [paper]: batch 64 x 15 items, d=256, N=3 networks, M=8 views; mean of 1 step(s) after 1 warm-up step(s)
  part                                 ms/step      %
  attention (LN, QKV, SDPA, proj)        108.7   40.0
  total (profiled)                       271.7  100.0
  saved for backward, by part (one step of the heaviest batch)          MiB      %
  attention (LN, QKV, SDPA, proj)            600.0   60.0
  output logits (scored positions)           400.0   40.0
  total saved for backward                  1000.0  100.0
  parameters                                  37.5
  gradients                                   37.5
  Adam moments                                75.0
  peak RSS before the first step             900.0
  peak RSS of this process                  3860.2
  operators by memory they allocate in one step (largest 8; MiB in all, calls, MiB per call):
      aten::_log_softmax                         660.4      4     165.1
      aten::baddbmm                              330.2      2     165.1
emkd beauty [paper]: batch 128 x 15 items, d=256, N=3 networks, M=8 views; mean of 1 step(s) after 1 warm-up step(s)
  attention (LN, QKV, SDPA, proj)        200.0   50.0
"""


def test_memory_profile_table_reads_the_memory_block_and_the_step_table_skips_it(tmp_path):
    path = tmp_path / "profiled-memory.txt"
    path.write_text(MEMORY)
    memory = perf.memory_profile_table(path)
    assert memory["part"].tolist() == ["attention (LN, QKV, SDPA, proj)", "output logits (scored positions)",
                                       "total saved for backward", "parameters", "gradients", "Adam moments",
                                       "peak RSS before the first step", "peak RSS of this process"]
    assert set(memory["batch"]) == {64} and memory["MiB"].iloc[-1] == 3860.2
    assert memory["% of saved"].iloc[0] == 60.0 and np.isnan(memory["% of saved"].iloc[3])
    steps = perf.step_profile_table(path)
    assert steps["ms / step"].tolist() == [108.7, 200.0]   # no MiB read as ms


def _memory_rows(malloc, batch, peak, saved):
    base = {"method": "emkd", "profile": "paper", "malloc": malloc, "batch": batch, "% of saved": np.nan}
    return [{**base, "part": "total saved for backward", "MiB": saved},
            {**base, "part": "peak RSS of this process", "MiB": peak}]


def test_memory_at_batch_extrapolates_on_the_line_through_the_two_largest_batches():
    import pandas as pd
    memory = pd.DataFrame(_memory_rows("kept", 64, 3072.0, 512.0) + _memory_rows("kept", 128, 5120.0, 1024.0)
                          + _memory_rows("glibc default", 64, 1024.0, 512.0))
    table = perf.memory_at_batch(memory, 256).set_index("malloc")
    assert table.loc["kept", "peak RSS at 64 (GiB)"] == 3.0 and table.loc["kept", "saved at 128 (GiB)"] == 1.0
    assert table.loc["kept", "peak RSS at 256, extrapolated (GiB)"] == 9.0   # 5 GiB + 2 GiB per 64 x 2
    assert np.isnan(table.loc["glibc default", "peak RSS at 256, extrapolated (GiB)"])  # one batch: no line
    lines = perf.performance_found(pd.DataFrame(columns=["met"]), pd.DataFrame(
        {"runs": [1], "stored": [1], "CPU-hours (new runs)": [1.0], "not stored yet": [0]}, index=["total"]),
        pd.DataFrame({"status": ["none"]}), pd.DataFrame(columns=["method"]), pd.DataFrame({"status": ["none"]}),
        pd.DataFrame(columns=["target", "measured", "met"]), pd.DataFrame({"status": ["none"]}),
        memory=table.reset_index())
    assert ("EMKD [paper], freed memory kept: peak RSS 3.0 GiB at batch 64, 5.0 GiB at batch 128; on the line "
            "through them 9.0 GiB at batch 256 (target 4 GiB: not met)") in lines
    assert "EMKD [paper], freed memory glibc default: peak RSS 1.0 GiB at batch 64" in lines
    assert lines[-1] == ("the 4 GiB target at batch 256: not met by any profiled setting (the lowest 9.0 GiB, "
                         "without options, extrapolated)")


def test_memory_at_batch_names_the_parts_that_save_the_most(tmp_path):
    path = tmp_path / "profiled-memory.txt"
    path.write_text(MEMORY)
    table = perf.memory_at_batch(perf.memory_profile_table(path), 256)
    assert table["largest saved parts"].tolist() == [
        "attention (LN, QKV, SDPA, proj) 60%, output logits (scored positions) 40%"]


def test_memory_operators_reads_the_allocation_lines(tmp_path):
    path = tmp_path / "profiled-memory.txt"
    path.write_text("$ python benchmarks/step_profile.py --memory --malloc-default\n" + MEMORY)
    ops = perf.memory_operators(path)
    assert ops[["operator", "calls", "MiB per call"]].values.tolist() == [["aten::_log_softmax", 4, 165.1],
                                                                         ["aten::baddbmm", 2, 165.1]]
    assert set(ops["malloc"]) == {"glibc default"} and set(ops["batch"]) == {64}
    assert perf.memory_profile_table(path)["part"].iloc[-1] == "peak RSS of this process"


def _memory_with_options(tmp_path):
    """``MEMORY`` at batch 64 without options, and its batch-64 block again at
    batch 256 with activation checkpointing and output chunks."""
    path = tmp_path / "memory-options.txt"
    at_256 = MEMORY.split("emkd beauty [paper]: batch 128")[0].replace("batch 64 x", "batch 256 x")
    path.write_text("$ python benchmarks/step_profile.py --memory --set train__batch_size=64\n" + MEMORY
                    + "$ python benchmarks/step_profile.py --memory --set train__batch_size=256 "
                      "--set train__activation_checkpointing=true --set params__output_chunk=1024\n" + at_256)
    return path


def test_memory_options_separate_the_rows_and_a_measured_target_batch_gets_its_verdict(tmp_path):
    import pandas as pd
    path = _memory_with_options(tmp_path)
    memory = perf.memory_profile_table(path)
    assert list(dict.fromkeys(memory["options"])) == ["none", "activation_checkpointing, output_chunk=1024"]
    table = perf.memory_at_batch(memory, 256)
    assert table["options"].tolist() == ["none", "activation_checkpointing, output_chunk=1024"]
    assert table["at target batch"].tolist() == ["", "measured"]
    assert table["peak RSS at target batch (GiB)"].iloc[1] == pytest.approx(3860.2 / 1024)
    lines = perf.performance_found(pd.DataFrame(columns=["met"]), pd.DataFrame(
        {"runs": [1], "stored": [1], "CPU-hours (new runs)": [1.0], "not stored yet": [0]}, index=["total"]),
        pd.DataFrame({"status": ["none"]}), pd.DataFrame(columns=["method"]), pd.DataFrame({"status": ["none"]}),
        pd.DataFrame(columns=["target", "measured", "met"]), pd.DataFrame({"status": ["none"]}), memory=table)
    assert any(line.startswith("EMKD [paper] with activation_checkpointing, output_chunk=1024, freed memory kept: "
                               "peak RSS 3.8 GiB at batch 256 (measured at batch 256; target 4 GiB: met)")
               for line in lines), lines
    # the verdict in one line: the option that meets it; the step without options has no peak at 256 here
    assert lines[-1] == "the 4 GiB target at batch 256: met with activation_checkpointing, output_chunk=1024 " \
                        "(3.8 GiB, measured)"
    plain = table.assign(**{"peak RSS at target batch (GiB)": [9.5, 3.8], "at target batch": ["extrapolated",
                                                                                               "measured"]})
    assert perf._memory_target_found(plain, 4.0) == [
        "the 4 GiB target at batch 256: met with activation_checkpointing, output_chunk=1024 (3.8 GiB, measured); "
        "without options the step's lowest peak is 9.5 GiB (extrapolated)"]
    costly = plain.assign(**{"peak RSS at target batch (GiB)": [9.5, 12.0]})   # the options cost memory here
    assert perf._memory_target_found(costly, 10.0) == [
        "the 10 GiB target at batch 256: met without any option (9.5 GiB, extrapolated)"]


def test_memory_profiles_joins_the_files_that_hold_a_memory_block(tmp_path):
    (tmp_path / "memory-a.txt").write_text(MEMORY)
    (tmp_path / "memory-b.txt").write_text("# nothing measured\n")
    joined = perf.memory_profiles(sorted(tmp_path.glob("memory-*.txt")))
    assert set(joined["file"]) == {"memory-a.txt"} and len(joined) == len(perf.memory_profile_table(tmp_path / "memory-a.txt"))
    assert perf.memory_profiles([tmp_path / "memory-b.txt"]) is None


def test_target_table_shows_bf16_autocast_beside_fp32_and_says_which_met_the_target(tmp_path):
    path = tmp_path / "measured-bf16.txt"
    path.write_text("# idle\n$ python benchmarks/train_throughput.py --autocast bf16\n"
                    "measured fp32 matmul peak: 100.0 GFLOP/s; bf16: 400.0 GFLOP/s (faster than fp32)\n"
                    "sasrec    beauty [cpu]:     591 sequences/s,    74.1 s/epoch (43793 training sequences, "
                    "172 batches of 256; timed 20),   30.0 GFLOP/s = 30.0% of peak\n"
                    "sasrec[bf16] beauty [cpu]:     1343 sequences/s,    32.6 s/epoch (43793 training sequences, "
                    "172 batches of 256; timed 20),   60.0 GFLOP/s = 60.0% of peak\n"
                    "emkd    beauty [cpu]:     100 sequences/s,    400.0 s/epoch (43793 training sequences, "
                    "172 batches of 256; timed 20),   10.0 GFLOP/s = 10.0% of peak\n"
                    "emkd[bf16] beauty [cpu]:     120 sequences/s,    300.0 s/epoch (43793 training sequences, "
                    "172 batches of 256; timed 20),   12.0 GFLOP/s = 12.0% of peak\n")
    lines = perf.benchmark_table([path])
    assert lines["bf16 peak GFLOP/s"].tolist() == [400.0] * 4
    targets = perf.target_table(lines)
    assert targets.loc["sasrec", "measured % of peak"] == 30.0 and targets.loc["sasrec", "met"] == "with bf16 autocast"
    assert targets.loc["sasrec", "bf16 autocast % of fp32 peak"] == 60.0
    assert targets.loc["sasrec", "bf16 autocast % of bf16 peak"] == pytest.approx(15.0)
    assert targets.loc["emkd", "met"] == "no" and targets.loc["bert4rec", "met"] == "not measured"
    assert targets.loc["sasrec", "sequences / s"] == 591
    assert targets.loc["sasrec", "bf16 measured in"] == "measured-bf16.txt"
    assert targets.loc["sasrec", "measured in"] == "measured-bf16.txt (fp32 peak 100 GFLOP/s)"   # no CPU line
    none = pd.DataFrame({"status": ["nothing"]})
    budget = pd.DataFrame({"runs": [3], "stored": [1], "CPU-hours (new runs)": [2.5], "not stored yet": [2]},
                          index=["total"])
    found = perf.performance_found(targets, budget, none, pd.DataFrame(), none,
                                   pd.DataFrame(columns=["target", "measured", "met"]), none)
    assert found[0] == ("SASRec: best measured 30.0% of the fp32 peak (60.0% with bf16 autocast) against a target "
                        "of 50% (met only with bf16 autocast)")
    assert found[1].startswith("EMKD: best measured 10.0% of the fp32 peak (12.0% with bf16 autocast)")



def test_target_table_sets_the_best_share_against_the_highest_peak_of_its_cpu_type(tmp_path):
    line = ("sasrec    beauty [cpu]:     {r} sequences/s,    74.1 s/epoch (43793 training sequences, "
            "172 batches of 256; timed 20),   {g} GFLOP/s = {s}% of peak\n")
    paths = []
    for name, machine, peak, gflops in (("low.txt", "AMD EPYC", 100.0, 30.0), ("high.txt", "AMD EPYC", 125.0, 25.0),
                                        ("other.txt", "Intel Xeon", 400.0, 40.0)):
        paths.append(tmp_path / name)
        paths[-1].write_text(f"machine: {machine} x2 (2 threads)\nmeasured fp32 matmul peak: {peak} GFLOP/s\n"
                             + line.format(r=500, g=gflops, s=100 * gflops / peak))
    targets = perf.target_table(perf.benchmark_table(paths))
    # 30 GFLOP/s is 30% of its own day's peak, 24% of the 125 GFLOP/s the same CPU type reached another day;
    # the Intel machine's higher peak is another type's and does not count
    assert targets.loc["sasrec", "measured % of peak"] == 30.0
    assert targets.loc["sasrec", perf.HIGHEST_PEAK_SHARE] == pytest.approx(24.0)
    assert targets.loc["sasrec", "measured in"] == "low.txt (AMD EPYC, fp32 peak 100 GFLOP/s; the highest on this " \
                                                  "CPU type 125)"
    found = _found(targets=targets)
    assert found[0] == ("SASRec: best measured 30.0% of the fp32 peak, 24.0% of the highest fp32 peak measured on "
                        "the same CPU type (its peak that day was lower) against a target of 50% (not met)")



def test_benchmark_lines_with_a_share_under_ten_percent_or_a_lower_bound_are_read_and_ab_speedups_pairs_them(tmp_path):
    path = tmp_path / "measured-ab.txt"
    line = ("{m} beauty [cpu]: {r} sequences/s,   80.0 s/epoch (100 training sequences, 2 batches),"
            " {g} GFLOP/s = {s}% of peak")
    blocks = []
    for code, emkd, s4rec in (("old: nn.Dropout", 150, 290), ("new: layers.Dropout", 180, 330),
                              ("old: nn.Dropout", 160, 310), ("new: layers.Dropout", 190, 340)):
        blocks += [f"$ python benchmarks/train_throughput.py --methods emkd s4rec  # {code}",
                   "WARNING: 1-minute load average 3.00 > 1: other processes share this machine",
                   line.format(m="emkd", r=emkd, g="17.4", s=" 9.1"),        # printed as "=  9.1%"
                   line.format(m="s4rec", r=s4rec, g=">=  21.4", s=">=13.8")]  # a lower bound
    path.write_text("# header\n" + "\n".join(blocks) + "\n")
    table = perf.benchmark_table([path])
    assert list(table["method"]) == ["emkd", "s4rec"] * 4
    assert list(table["% of fp32 peak"][:2]) == [9.1, 13.8]
    ab = perf.ab_speedups(path, "nn.Dropout", "layers.Dropout").set_index("method")
    assert ab.loc["emkd", "before (sequences / s)"] == "150, 160" and ab.loc["emkd", "after (sequences / s)"] == "180, 190"
    assert ab.loc["emkd", "speed-up (medians)"] == pytest.approx(185 / 155)
    assert ab.loc["s4rec", "speed-up (medians)"] == pytest.approx(335 / 300)
    (found,) = perf.ab_found(ab.reset_index(), "uniform dropout masks")
    assert found == "uniform dropout masks: EMKD 1.19x, S4Rec 1.12x (alternated under a load of 3.0; measured-ab.txt)"
    assert list(perf.ab_speedups(path, "nn.Dropout", "absent").columns) == ["status"]
    assert perf.ab_found(perf.ab_speedups(path, "nn.Dropout", "absent"), "x") == []


def test_a_benchmarked_method_on_another_encoder_is_named_as_the_tables_name_it():
    from emkd_lib.report.tables import method_title
    from emkd_lib.profiles import profile_config
    from emkd_lib.report import method_label
    assert method_title("emkd-gru4rec") == method_label(profile_config("cpu", "beauty", "emkd", encoder="gru4rec"))
    assert method_title("sasrec-ef") == "SASRec+EF" and method_title("emkd") == "EMKD"
    # Datasets and seeds in a run's label are kept as they are.
    assert [method_title(p) for p in ("ml-1m", 0, "nope-x")] == ["ml-1m", "0", "nope-x"]


def test_benchmark_notes_set_quoted_commands_as_code(tmp_path):
    from emkd_lib.report.performance import benchmark_notes
    path = tmp_path / "compared.txt"
    path.write_text("# outputs, 2026-12-02, under load\n$ python benchmarks/x.py --side ours\nlines\n"
                    "# python benchmarks/public_pattern.py --side ours --batches 3 --threads 1 (the library) was stopped.\n")
    assert benchmark_notes(path) == ("outputs, 2026-12-02, under load. `python benchmarks/public_pattern.py --side ours "
                                     "--batches 3 --threads 1` (the library) was stopped.")


def test_benchmark_method_ids_read_as_the_books_method_names():
    from emkd_lib.report.tables import method_title
    from emkd_lib.report.performance import with_method_titles
    assert method_title("emkd-gru4rec[bf16]") == "EMKD (GRU4Rec, bf16)"
    assert method_title("sasrec[compiled]") == "SASRec (compiled)"
    assert method_title("sasrec-lf") == "SASRec+LF" and method_title("bert4rec") == "BERT4Rec"
    assert method_title("emkd_lib") == "emkd_lib" and method_title("nosuch[bf16]") == "nosuch[bf16]"
    flat = with_method_titles(pd.DataFrame({"method": ["emkd[bf16]", "iclrec"], "x": [1, 2]}))
    assert list(flat["method"]) == ["EMKD (bf16)", "ICLRec"]
    stacked = with_method_titles(pd.DataFrame({"file": ["a", "a"], "method": ["sasrec", "emkd-caser"], "x": [1, 2]})
                                 .set_index(["file", "method"]))
    assert list(stacked.index) == [("a", "SASRec"), ("a", "EMKD (Caser)")]
    clash = with_method_titles(pd.DataFrame({"f": ["a", "b"], "method": ["sasrec", "SASRec"], "x": [1, 2]})
                               .set_index(["f", "method"]))           # two ids, one title: no level clash
    assert list(clash.index) == [("a", "SASRec"), ("b", "SASRec")] and clash.index.names == ["f", "method"]
    single = with_method_titles(pd.DataFrame({"x": [1]}, index=pd.Index(["s4rec"], name="method")))
    assert list(single.index) == ["S4Rec"] and single.index.name == "method"


def test_gpu_status_counts_runs_and_benchmark_outputs_from_a_gpu(tmp_path):
    from types import SimpleNamespace
    cpu, gpu = (SimpleNamespace(provenance={"device": d}) for d in ("cpu", "cuda:0"))
    quiet, cuda = tmp_path / "a.txt", tmp_path / "b.txt"
    quiet.write_text("machine: AMD EPYC x2\n")
    cuda.write_text("device: cuda (NVIDIA H100)\n")
    assert perf.gpu_status([cpu], [quiet]).startswith("No stored run and no committed benchmark output came from a GPU")
    assert perf.gpu_status([cpu, gpu], [quiet, cuda]) == ("1 stored run trained on a GPU; committed benchmark outputs "
                                                         "that name a CUDA device: b.txt.")


def test_performance_found_calls_a_bf16_slowdown_slower():
    none = pd.DataFrame({"status": ["none"]})
    budget = pd.DataFrame({"runs": [1], "stored": [1], "CPU-hours (new runs)": [1.0], "not stored yet": [0]},
                          index=["total"])
    bf16 = pd.DataFrame({"method": ["sasrec", "bert4rec"], "bf16 speed-up": [2.27, 0.83], "file": ["f", "f"]})
    lines = perf.performance_found(pd.DataFrame(columns=["met"]), budget, none, pd.DataFrame(columns=["method"]),
                                   bf16, pd.DataFrame(columns=["target", "measured", "met"]), none)
    assert "SASRec: bf16 autocast trains 2.27x as fast as fp32 on the same batches (f)" in lines
    assert "BERT4Rec: bf16 autocast trains slower than fp32 (0.83x its speed) on the same batches (f)" in lines


def test_benchmark_source_quotes_the_files_first_line(tmp_path):
    from emkd_lib.report import performance as perf
    path = tmp_path / "measured-2026-12-06-cpu.txt"
    path.write_text("# train_throughput.py output, commit abc, 2-core machine\nsasrec ...\n")
    assert perf.benchmark_source(path) == ("From `benchmarks/measured-2026-12-06-cpu.txt`: "
                                           "train_throughput.py output, commit abc, 2-core machine.")


def test_memory_batch_tables_name_the_constant_settings_once_and_keep_the_ones_that_vary(tmp_path):
    path = _memory_with_options(tmp_path)
    at_batch = perf.memory_at_batch(perf.memory_profile_table(path), 256)
    peaks, saved, caption = perf.memory_batch_tables(at_batch)
    # method, profile and malloc policy are the same in every row: said once
    assert caption == "peak resident memory of one step, EMKD paper kept (GiB)"
    assert peaks.index.tolist() == ["none", "activation_checkpointing, output_chunk=1024"]
    assert peaks.loc["activation_checkpointing, output_chunk=1024", "batch 256"] == pytest.approx(3860.2 / 1024)
    assert "saved" not in " ".join(peaks.columns) and saved.columns.tolist() == ["largest saved parts"]
    assert perf.memory_batch_tables(pd.DataFrame()) is None
    peaks, _, caption = perf.memory_batch_tables(at_batch.iloc[:1])   # one row: its settings stay its index
    assert caption == "peak resident memory of one step (GiB)" and peaks.index.nlevels == 4


def test_largest_allocations_keep_each_settings_largest_batch_with_freed_memory_kept(tmp_path):
    at_64 = MEMORY.split("emkd beauty [paper]: batch 128")[0]
    at_128 = at_64.replace("batch 64 x", "batch 128 x")
    kept, default = tmp_path / "memory-kept.txt", tmp_path / "memory-default.txt"
    kept.write_text("$ python benchmarks/step_profile.py --memory\n" + at_64 + at_128)
    default.write_text("$ python benchmarks/step_profile.py --memory --malloc-default\n" + at_64 + at_128)
    assert set(perf.memory_operators(kept)["batch"]) == {64, 128}
    largest = perf.largest_allocations([kept, default])
    assert largest["batch"].tolist() == [128, 128]   # the two operators of the batch-128 block, kept only
    assert largest.index.names == ["options", "operator"] and "malloc" not in largest
    assert perf.largest_allocations([]) is None


def test_by_method_titles_the_methods_and_drops_the_file_column():
    table = pd.DataFrame({"method": ["emkd", "sasrec"], "file": ["a.txt", "a.txt"], "ms": [1.0, 2.0]})
    shown = perf.by_method(table)
    assert shown.index.tolist() == ["EMKD", "SASRec"] and shown.columns.tolist() == ["ms"]


def test_operator_shares_stack_one_share_table_per_operator(profile_file):
    both = perf.operator_shares(profile_file, ("aten::bernoulli_", "aten::bmm"))
    alone = [perf.operator_share(profile_file, op) for op in ("aten::bernoulli_", "aten::bmm")]
    assert len(both) == sum(len(t) for t in alone)
    pd.testing.assert_frame_equal(both.iloc[:len(alone[0])], alone[0])


def test_the_memory_target_batch_is_the_emkd_paper_profiles():
    from emkd_lib.profiles import profile_config
    assert perf.memory_target_batch() == profile_config("paper", "beauty", "emkd").train.batch_size == 256
