"""The performance chapter's parsers read the benchmark scripts' own output."""
from __future__ import annotations

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
measured fp32 matmul peak: 100.0 GFLOP/s
sasrec    beauty [cpu]:     2116 sequences/s,    10.6 s/epoch (22512 training sequences, 88 batches), 52.1 GFLOP/s = 52.1% of peak
$ python benchmarks/train_throughput.py --dataset beauty --profile cpu --methods sasrec --malloc-default
sasrec    beauty [cpu]:     3000 sequences/s,     8.0 s/epoch (22512 training sequences, 88 batches), 60.0 GFLOP/s = 60.0% of peak
"""


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
    sides, targets = perf.comparison_tables(path)
    assert list(sides.side) == ["library (batched, masked logits)", "public code's pattern", "library",
                                "RecBole 1.2.1"]
    assert sides["sequences/s"].iloc[1] == 48.8 and sides["peak RSS (GiB)"].iloc[1] == 11.26
    assert sides["target positions/s"].iloc[3] == 698 and sides["peak RSS (GiB)"].isna().iloc[3]
    assert list(targets.met) == ["met", "not met", ""]
    assert list(targets.measured) == ["8.52x", "4.50 GiB", "4.56x"]
    assert targets.benchmark.iloc[2] == "recbole_peer.py --batches 30"


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
    assert any(line.startswith("EMKD: the largest parts of a step are backward (50%)") for line in lines)
    assert "EMKD: dropout's random masks take at least 22% of a step" in lines


def test_feature_extraction_table_reads_the_extractors_summary_lines(tmp_path):
    path = tmp_path / "features-test.txt"
    path.write_text("# header\n$ python -m emkd_lib.data.features ml-100k\n"
                    "ml-100k: 1682 items in 95.4 s -> /tmp/c/features/ml-100k/3669 (12.3 MiB)\n"
                    "  text_tokens: (1683, 32, 384) float16\n"
                    "beauty: 12101 items in 301.0 s -> /tmp/c/features/beauty/ab12 (60.0 MiB)\n")
    table = perf.feature_extraction_table(path)
    assert table.loc["ml-100k", "items"] == 1682 and table.loc["beauty", "seconds"] == 301.0
    assert table.loc["ml-100k", "cache (MiB)"] == 12.3 and len(table) == 2
