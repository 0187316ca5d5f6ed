"""The benchmark scripts run end to end on the smoke profile (two batches),
so that a change of emkd_lib's API breaks a test, not a later measurement.
Nothing here looks at a timing."""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch

from emkd_lib import losses, settings
from emkd_lib.data import dataset_spec, resolve_dataset_dir
from emkd_lib.methods import baselines
from emkd_lib.methods import emkd as emkd_method
from emkd_lib.profiles import profile_config

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(autouse=True)
def _beauty_mirror(tmp_path, monkeypatch):
    try:
        resolve_dataset_dir(dataset_spec("beauty"), settings.current().data_dir, download=False)
    except FileNotFoundError:
        pytest.skip("offline mirror for beauty not available")
    monkeypatch.setenv("EMKD_CACHE_DIR", str(tmp_path / "emkd-cache"))


@pytest.fixture
def scripts(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("train_throughput"), importlib.import_module("step_profile")


def test_train_throughput_smoke(scripts, capsys):
    throughput, _ = scripts
    results = throughput.main(["--dataset", "beauty", "--profile", "smoke", "--methods", "sasrec", "emkd",
                               "--autocast", "bf16", "--max-batches", "2", "--loop", "both", "--peak-size", "256", "--peak-repeats", "2",
                               "--malloc-default"])
    out = capsys.readouterr().out
    assert "measured fp32 matmul peak" in out and "bf16: " in out and "cpu model" in out
    assert [r["method"] for r in results] == ["sasrec", "emkd"]
    assert all(r["sequences_per_s"] > 0 and r["useful_flops"] > 0 for r in results)
    emkd = results[1]
    assert emkd["loop_same_seconds"] > 0 and emkd["loop_bert4rec_seconds"] > 0
    assert "batched ensemble speed-up" in out
    assert out.count("bf16 autocast speed-up") == 2 and all(r["bf16_seconds"] > 0 for r in results)


def test_the_matmul_peak_is_the_best_call_after_a_warm_up_or_one_slow_call(scripts, monkeypatch):
    """A fake clock in which the matmuls take the given seconds, one after
    the other: a fast first call is a warm-up (not counted, even when it is
    the fastest) followed by ``repeats`` timed calls, of which the fastest
    counts; a first call over ``slow_seconds`` is the only one (a bf16
    matmul without bf16 units)."""
    throughput, _ = scripts

    class Clock:
        def __init__(self, seconds):
            self.seconds, self.now, self.reads = list(seconds), 0.0, 0

        def perf_counter(self):
            # reads come in pairs around a call: the second of a pair adds the call's seconds
            self.reads += 1
            if self.reads % 2 == 0:
                self.now += self.seconds[self.reads // 2 - 1]
            return self.now

    n = 16
    for seconds, calls, best in (((0.5, 3.0, 2.0, 4.0, 2.5), 5, 2.0), ((6.0, 1.0, 1.0, 1.0, 1.0), 1, 6.0)):
        clock = Clock(seconds)
        monkeypatch.setattr(throughput, "time", clock)
        peak = throughput.measured_matmul_peak(throughput.torch.device("cpu"), n=n, repeats=4, slow_seconds=5.0)
        assert clock.reads == 2 * calls
        assert peak == pytest.approx(2 * n**3 / best / 1e9)


def test_train_throughput_times_the_compiled_model_from_the_same_weights(scripts, capsys):
    throughput, _ = scripts
    (result,) = throughput.main(["--dataset", "beauty", "--profile", "smoke", "--methods", "sasrec", "--compile",
                                 "--max-batches", "2", "--loop", "none", "--peak-size", "256", "--peak-repeats", "2"])
    out = capsys.readouterr().out
    assert "sasrec[compiled] beauty [smoke]:" in out
    assert "torch.compile speed-up over eager on the same batches" in out and result["compiled_seconds"] > 0

def test_forward_macs_counts_every_emkd_term():
    import numpy as np

    from emkd_lib.flops import forward_macs
    config = profile_config("cpu", "beauty", "emkd")
    lengths = np.full(256, 15)
    full = forward_macs(config, 12101, 637, lengths)
    no_extras = forward_macs(config.replace(params__ap=False, params__icl=False, params__ccl=False),
                             12101, 637, lengths)
    assert full > no_extras > 0
    b4r = forward_macs(config.replace(params__output_layer="bert4rec"), 12101, 637, lengths)
    assert b4r > full  # the projection head's d^2 per scored position


def test_step_profile_times_the_batches_it_profiles(scripts, monkeypatch, capsys):
    # Length-bucketed batches differ in length, so the unprofiled wall time
    # compares with the profiled parts only on the same batches.
    _, step_profile = scripts
    seen, step = [], step_profile.train_step

    def recorded_step(model, recipe, batch, *args, **kwargs):
        seen.append([tuple(e) for e in batch])
        return step(model, recipe, batch, *args, **kwargs)

    monkeypatch.setattr(step_profile, "train_step", recorded_step)
    step_profile.main(["--dataset", "beauty", "--profile", "smoke", "--methods", "sasrec", "--warmup", "1",
                       "--steps", "2", "--malloc-default"])
    assert len(seen) == 5 and seen[1:3] == seen[3:5] and seen[1] != seen[2]
    assert "items per sequence in the timed batches" in capsys.readouterr().out


def test_step_profile_smoke(scripts, capsys):
    _, step_profile = scripts
    originals = (losses.distillation_loss, emkd_method.cloze_mask, baselines.cloze_mask)
    results = step_profile.main(["--dataset", "beauty", "--profile", "smoke", "--methods", "emkd", "sasrec",
                                 "--max-batches", "2", "--malloc-default"])
    out = capsys.readouterr().out
    assert "total (profiled)" in out
    emkd, sasrec = results
    for part in ("embedding", "attention", "ffn", "logits", "kd", "ap", "contrastive", "backward", "optimizer"):
        assert emkd["parts_ms"].get(part, 0) > 0, part
    for part in ("attention", "ffn", "logits", "ce", "backward"):
        assert sasrec["parts_ms"].get(part, 0) > 0, part
    assert "kd" not in sasrec["parts_ms"]
    assert abs(sum(emkd["parts_ms"].values()) - emkd["total_ms"]) < 1e-6
    # the labels are gone once the profile is done
    assert (losses.distillation_loss, emkd_method.cloze_mask, baselines.cloze_mask) == originals


def test_saved_for_backward_counts_each_saved_storage_once_in_its_part(scripts):
    import torch
    _, step_profile = scripts
    stack = step_profile.PartStack()
    saved = step_profile.SavedForBackward(stack)
    x = torch.randn(8, 5, requires_grad=True)
    w = torch.randn(3, 5, requires_grad=True)
    with saved.hooks():
        with stack.part("attention"):
            y = torch.nn.functional.linear(x, w)          # saves x and w
        with stack.part("ffn"):
            z = (y * y).sum() + torch.nn.functional.linear(x, w).sum()   # y (saved twice by y * y), x, w again
    z.backward()
    assert saved.bytes == {"attention": (8 * 5 + 3 * 5) * 4, "ffn": 8 * 3 * 4}


def test_step_profile_memory_reports_saved_bytes_state_and_peak(scripts, capsys):
    _, step_profile = scripts
    (emkd,) = step_profile.main(["--dataset", "beauty", "--profile", "smoke", "--methods", "emkd",
                                 "--max-batches", "2", "--malloc-default", "--memory"])
    out = capsys.readouterr().out
    for part in ("attention", "ffn", "logits", "kd"):
        assert emkd["saved_bytes"].get(part, 0) > 0, part
    assert "total saved for backward" in out and "peak RSS of this process" in out and "Adam moments" in out
    assert "operators by memory they allocate in one step" in out


def _deterministic_cloze(ids, mask_prob, mask_token, n_items, generator=None, force_one=True, rule="bert"):
    """Every third position masked, the same in every call: both patterns see the same views."""
    import torch
    positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    chosen = (ids > 0) & (positions % 3 == 1)
    return torch.where(chosen, torch.full_like(ids, mask_token), ids), chosen


def test_public_pattern_loss_equals_the_library_terms_on_the_same_views(monkeypatch):
    """On full-length windows (no padding: the pattern's dense AP then averages
    the same positions) and identical views, the public code's pattern and
    the library's batched step compute the same EMKD terms."""
    import torch

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    public = importlib.import_module("public_pattern")
    monkeypatch.setattr(public, "cloze_mask", _deterministic_cloze)
    monkeypatch.setattr(emkd_method, "cloze_mask", _deterministic_cloze)
    config = public.profile_config("smoke", "beauty", "emkd")
    model, _, batches, _ = public._batches(config, 64, 3)
    ids = torch.cat(batches)
    ids = ids[(ids > 0).all(1)][:16]
    assert len(ids) >= 4
    model.eval()                                   # no dropout: both sides are deterministic
    ours = emkd_method.emkd_loss(model, ids, None, config.params)
    theirs = public.public_pattern_loss(public.LoopEnsemble.same_architecture(model).eval(), ids, None,
                                        config.params)
    assert set(ours) == set(theirs) == {"loss", "mip", "ap", "icl", "ccl", "kd"}
    for term in ours:
        torch.testing.assert_close(theirs[term], ours[term], rtol=1e-4, atol=1e-5, msg=term)


def test_public_pattern_smoke(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    public = importlib.import_module("public_pattern")
    result = public.main(["--profile", "smoke", "--batches", "1", "--batch-size", "32", "--threads", "1"])
    out = capsys.readouterr().out
    assert "target: library >= 5x the pattern" in out and "not the profile's" in out
    assert result["ratio"] > 0 and result["ours"]["sequences"] == result["public"]["sequences"] == 32


def test_public_pattern_times_the_library_at_the_runs_precision(capsys, monkeypatch):
    """``--set train__precision=bf16``: the library's step runs under bf16
    autocast as a bf16 run trains (its terms come back fp32); the pattern stays fp32."""
    import torch
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    public = importlib.import_module("public_pattern")
    seen = []
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, inputs: seen.append(torch.is_autocast_enabled("cpu")))
    args = public.build_parser().parse_args(["--profile", "smoke", "--batches", "1", "--batch-size", "16",
                                             "--threads", "1", "--set", "train__precision=bf16"])
    try:
        assert public.measure("ours", args)["precision"] == "bf16" and seen and all(seen)
        seen.clear()
        assert public.measure("public", args)["precision"] == "fp32" and seen and not any(seen)
    finally:
        hook.remove()


def test_recbole_inter_file_has_one_row_per_interaction_in_order(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    peer = importlib.import_module("recbole_peer")
    path = tmp_path / "x.inter"
    peer.write_atomic_inter([[5, 3, 9], [2, 2]], path)
    lines = path.read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token\ttimestamp:float"
    assert lines[1:] == ["1\t5\t0", "1\t3\t1", "1\t9\t2", "2\t2\t0", "2\t2\t1"]


def test_recbole_peer_without_its_venv_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    peer = importlib.import_module("recbole_peer")
    with pytest.raises(SystemExit, match="no RecBole venv"):
        peer.main(["--venv", str(tmp_path / "none")])


def test_recbole_peer_smoke(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    peer = importlib.import_module("recbole_peer")
    if not (peer.DEFAULT_VENV / "bin" / "python").exists():
        pytest.skip("RecBole's venv is not installed (see benchmarks/recbole_peer.py)")
    result = peer.main(["--batches", "1", "--batch-size", "32"])
    assert result["ratio"] > 0 and result["recbole"]["targets"] == 32
    assert "target positions/s" in capsys.readouterr().out


def test_clustering_share_smoke(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    share = importlib.import_module("clustering_share")
    from emkd_lib.methods import iclrec, s4rec
    originals = (s4rec.sinkhorn, iclrec.kmeans)
    results = share.main(["--profile", "smoke", "--batches", "2", "--threads", "1"])
    s4, icl = results
    assert s4["clustering_s"] > 0 and s4["epoch_start_s"] == 0       # Sinkhorn runs inside the steps
    assert icl["epoch_start_s"] > 0 and icl["clustering_s"] >= icl["epoch_start_s"]
    assert all(0 < r["share"] < 1 for r in results)
    assert "% of the epoch" in capsys.readouterr().out
    assert (s4rec.sinkhorn, iclrec.kmeans) == originals               # unwrapped afterwards


def test_bf16_autocast_keeps_the_loss_close_to_fp32(scripts):
    import torch

    throughput, _ = scripts
    config = throughput.profile_config("smoke", "beauty", "sasrec")
    dataset, split = throughput.run_data(config)
    torch.manual_seed(0)
    model, recipe = throughput.build_method(config, dataset)
    model.eval()
    from emkd_lib.batching import pad_left
    batch = torch.as_tensor(pad_left(recipe.make_examples(split.train)[:32], config.data.max_len))
    fp32 = recipe.loss(model, batch, None)["loss"]
    bf16 = throughput.with_precision(recipe, "bf16", torch.device("cpu")).loss(model, batch, None)["loss"]
    assert bf16.dtype == torch.float32
    assert abs(bf16.item() - fp32.item()) < 0.02 * fp32.item() and bf16.item() != fp32.item()


def test_macs_counts_equal_hand_computed_values():
    """Each counter on a config small enough to count by hand (the sums are in the comments)."""
    from emkd_lib.flops import emkd_macs, encoder_macs
    from emkd_lib.models.encoders import CaserConfig, GRU4RecConfig, TransformerConfig
    # 2 blocks x 3 tokens x (12 x 4^2 + 2 x width 2 x 4) = 6 x 208
    assert encoder_macs(TransformerConfig(hidden=4, n_blocks=2), tokens=3, width=2) == 1248
    # 2 layers x 3 tokens x 6 x 4^2
    assert encoder_macs(GRU4RecConfig(hidden=4, n_layers=2), tokens=3, width=2) == 576
    # 1 token: horizontal (1 + 2) x d 2 x 3 filters = 18, vertical L 2 x d 2 x 1 = 4, dense (3 x 2 + 1 x 2) x 2 = 16
    assert encoder_macs(CaserConfig(hidden=2, window=2, n_horizontal=3, n_vertical=1), tokens=1, width=2) == 38
    # EMKD on BERT4Rec, N = 2 networks, M = 2 views, d = 4, 10 items, 3 attributes, windows of 2 and 4 items:
    # encoder 1 block x 6 tokens x (192 + 2 x 4 x 4) = 1344, run N (M + 1) = 6 times: 8064;
    # masked positions max(0.5 x 2, 1) + max(0.5 x 4, 1) = 3, scored N M x 3 x 4 x 10 = 480;
    # AP at the 6 tokens of each network: 2 x 6 x 4 x 3 = 144;
    # ICL per network 2 x (M B + B^2 = 8) x (width 4 x d 4) = 256; CCL per ordered pair of networks 2 x 1 x 8 x 16 = 256
    config = profile_config("smoke", "beauty", "emkd").replace(
        encoder_config__hidden=4, encoder_config__n_blocks=1, params__n_networks=2, params__n_views=2,
        params__mask_prob=0.5)
    assert config.encoder == "bert4rec" and config.params.output_layer == "linear"
    assert emkd_macs(config, 10, 3, np.array([2, 4])) == 8064 + 480 + 144 + 256 + 256


def test_forward_macs_counts_by_the_methods_spec_and_the_encoders_config():
    from emkd_lib.flops import cloze_macs, emkd_macs, encoder_macs, forward_macs, next_item_macs
    from emkd_lib.methods import method_spec
    from emkd_lib.models.encoders import NextItNetConfig, is_cloze
    assert [m for m in ("sasrec", "bert4rec", "gru4rec", "caser", "nextitnet") if is_cloze(m)] == ["bert4rec"]
    assert method_spec("bert4rec").forward_macs is cloze_macs and method_spec("emkd").forward_macs is emkd_macs
    assert method_spec("cl4srec").forward_macs is next_item_macs   # its extra view: a lower bound
    lengths = np.array([3, 5, 8])
    sasrec = profile_config("smoke", "beauty", "sasrec")
    d = sasrec.encoder_config.hidden
    # next-item: 13 input tokens (a window's last item is its target), each scored against 100 items
    assert forward_macs(sasrec, 100, 0, lengths) == encoder_macs(sasrec.encoder_config, 13, 7) + 13 * d * 100
    with pytest.raises(ValueError, match="NextItNetConfig encoder is not counted"):
        encoder_macs(NextItNetConfig(), 13, 7)


def test_item_cross_entropy_ab_alternates_the_two_versions_and_the_chapter_reads_its_lines(monkeypatch, capsys,
                                                                                           tmp_path):
    from emkd_lib.report.performance import ab_found, interleaved_speedups
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    ab = importlib.import_module("item_cross_entropy_ab")
    fused = losses.masked_item_prediction_loss
    speedups = ab.main(["--profile", "smoke", "--methods", "emkd", "--batches", "1", "--rounds", "1"])
    assert losses.masked_item_prediction_loss is fused           # the library's loss is put back
    out = capsys.readouterr().out
    (tmp_path / "ab.txt").write_text(out)
    table = interleaved_speedups(tmp_path / "ab.txt")
    assert list(table["method"]) == ["emkd"] and table["speed-up (medians)"].iloc[0] == pytest.approx(
        speedups["emkd"], abs=1e-3)
    assert len(table["before (sequences / s)"].iloc[0].split(", ")) == 2    # one round: each version twice
    (line,) = ab_found(table, "the item cross entropy's hand-written gradient")
    assert line.startswith("the item cross entropy's hand-written gradient: EMKD ")


def test_ensemble_scores_ab_alternates_the_two_versions_and_puts_the_library_back(monkeypatch, capsys, tmp_path):
    from emkd_lib.models.ensemble import EncoderEnsemble
    from emkd_lib.report.performance import interleaved_speedups
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    ab = importlib.import_module("ensemble_scores_ab")
    batched, in_place = EncoderEnsemble.logits, losses._MutualKL.forward
    speedups = ab.main(["--profile", "smoke", "--methods", "emkd-gru4rec", "--networks", "2", "--users", "0",
                        "--batches", "1", "--rounds", "1"])
    assert EncoderEnsemble.logits is batched and losses._MutualKL.forward is in_place
    (tmp_path / "ab.txt").write_text(capsys.readouterr().out)
    table = interleaved_speedups(tmp_path / "ab.txt")
    assert list(table["method"]) == ["emkd-gru4rec"]
    assert table["speed-up (medians)"].iloc[0] == pytest.approx(speedups["emkd-gru4rec"], abs=1e-3)
    assert len(table["after (sequences / s)"].iloc[0].split(", ")) == 2    # one round: each version twice


def test_what_ensemble_scores_ab_times_as_before_gives_the_librarys_values(monkeypatch):
    """The "before" versions the benchmark times compute what the library
    does: the same scores, and the same KD loss and gradient."""
    from emkd_lib.models.encoders import GRU4RecConfig
    from emkd_lib.models.ensemble import EncoderEnsemble
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    ab = importlib.import_module("ensemble_scores_ab")
    torch.manual_seed(0)
    model = EncoderEnsemble("gru4rec", 2, 500, 10, config=GRU4RecConfig(hidden=16))
    hidden = torch.randn(2, 60, 16)
    assert torch.equal(ab.stacked_logits(model, hidden), model.logits(hidden))

    logits = torch.randn(3, 70, 500)      # 70 positions: chunks of 32, 32 and 6
    def kd(forward):
        monkeypatch.setattr(losses._MutualKL, "forward", staticmethod(forward))
        z = logits.clone().requires_grad_()
        loss = losses.distillation_loss(z, 0.5)
        loss.backward()
        return loss.detach(), z.grad
    library = kd(losses._MutualKL.forward)
    before = kd(ab.copied_kd_forward)
    assert torch.equal(library[0], before[0]) and torch.equal(library[1], before[1])
