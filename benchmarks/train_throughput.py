"""Training throughput of the core on a real dataset.

Prints the machine (CPU model or GPU name), its measured fp32 matmul peak
(and the bf16 one, with whether bf16 is faster here), then per method:
training sequences per second, seconds per epoch, the achieved useful
GFLOP/s and its share of the measured fp32 peak. Useful FLOPs are counted
analytically from the batches actually run (``forward_macs``: matmuls on
real tokens and scored positions only, x2 for FLOPs, x3 for forward +
backward); the peak is the best of several large square matmuls.

For EMKD on BERT4Rec it also times a loop of N separate networks, one after
the other, on the same batches, and prints the batched ensemble's
(``EnsembleBERT4Rec``) speed-up over that loop (``--loop``):

- ``same`` (default): N single-network ``EnsembleBERT4Rec`` modules with the
  run's own architecture (EMKD's defaults: Eq. 5's linear output layer,
  unscaled embeddings), weights sliced from the batched model;
- ``bert4rec``: the ensemble rebuilt with BERT4Rec's tied output layer and
  sqrt(d)-scaled embeddings (``params.output_layer="bert4rec"``,
  ``scale_embeddings=True``), timed batched and as N ``encoders.BERT4Rec``
  modules (``EnsembleBERT4Rec.network``) with N linear attribute heads;
- ``both``, ``none``.

``--compile`` also times each method's model under ``torch.compile``
(inductor, with ``fallback_random`` so that dropout draws the same random
stream as eager) against eager again, each from the same initial weights and
each after one untimed pass over the timed batches (the compiled one's
compiles each of their shapes), and prints the speed-up.

``--autocast bf16`` also times each method with its loss's forward pass under
bf16 autocast (``train.with_precision``, what ``train__precision=bf16`` trains
with) from the same initial weights and prints the speed-up; the accuracy of
bf16 training is not measured here (that needs full runs).

EMKD on a next-item encoder (``emkd-sasrec``, ``emkd-gru4rec``,
``emkd-caser``) is already a loop (``EncoderEnsemble``); nothing to compare.

    python benchmarks/train_throughput.py --dataset beauty --profile cpu
    python benchmarks/train_throughput.py --methods emkd emkd-sasrec --profile paper --max-batches 20
    python benchmarks/train_throughput.py --methods sasrec emkd --max-batches 5   # a seconds-long check

Numbers go to stdout only; the test suite runs it (tests/test_benchmarks.py)
but never looks at the numbers. Measure on an otherwise idle machine: the
header says when the 1-minute load average says it is not.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from torch import nn

from emkd_lib.batching import length_bucketed_batches
from emkd_lib.config import RunConfig, TrainConfig
from emkd_lib.flops import forward_macs
from emkd_lib.methods import build_method, method_name, parse_method
from emkd_lib.models.ensemble import EnsembleBERT4Rec
from emkd_lib.process import configure_process
from emkd_lib.profiles import profile_config
from emkd_lib.runs import run_data
from emkd_lib.store import cpu_features, machine_name
from emkd_lib.train import resolve_device, train_one_epoch, with_precision

WARMUP_BATCHES = 3
COUNTED_METHODS = ("sasrec", "bert4rec", "gru4rec", "caser", "emkd")  # every term of forward_macs


# ---- the method names on the command line ------------------------------------

def parse_override(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` keyed like ``RunConfig.replace`` (``params__n_views=4``);
    the value is read as JSON when it parses (numbers, true/false, null), else a string."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


# ---- the machine ---------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# A first matmul slower than this is the only one timed (``measured_matmul_peak``).
SLOW_MATMUL_SECONDS = 5.0


def measured_matmul_peak(device: torch.device, n: int = 2048, repeats: int = 10,
                         dtype: torch.dtype = torch.float32, slow_seconds: float = SLOW_MATMUL_SECONDS) -> float:
    """Best observed GFLOP/s of an n x n matmul in ``dtype`` after a first
    call (a warm-up, timed too): ``repeats`` more calls, or none where the
    first took longer than ``slow_seconds``. A CPU without bf16 units runs a
    2048 x 2048 bf16 matmul through a slow fallback, tens of seconds a call,
    and ten of them would take longer than the benchmark itself; one such
    call says how slow it is."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)

    def timed() -> float:
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        return time.perf_counter() - t0

    first = timed()   # the warm-up: its time includes first-call costs
    best = first if first > slow_seconds else min((timed() for _ in range(repeats)), default=float("inf"))
    return 2 * n**3 / best / 1e9


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def cpu_bf16_flags() -> list[str]:
    """The CPU's bf16 matmul features (x86: AVX512-BF16, AMX), as /proc/cpuinfo names them."""
    return sorted(set(cpu_features()) & {"avx512_bf16", "amx_bf16", "amx_tile", "avx_vnni"})


def load_note() -> str:
    """A warning when the machine is busy (1-minute load average > 1), else ''."""
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        return ""
    if load1 > 1:
        return (f"WARNING: 1-minute load average {load1:.2f} > 1: other processes share this machine; "
                f"the timings below are indicative only")
    return ""


def print_header(device: torch.device) -> None:
    """Print the benchmark's note (if any) and the machine, torch and threads."""
    note = load_note()
    if note:
        print(note)
    print(f"machine: {machine_name(device)}; torch {torch.__version__}; threads {torch.get_num_threads()}")


def print_machine(device: torch.device, peak_size: int, peak_repeats: int) -> float:
    """Print the machine and its measured peaks; returns the fp32 peak in GFLOP/s."""
    print_header(device)
    if device.type == "cpu":
        flags = cpu_bf16_flags()
        print(f"cpu model: {cpu_model()}; {os.cpu_count()} logical CPUs; bf16 features: {', '.join(flags) or 'none'}")
    else:
        print(f"cpu model (host): {cpu_model()}; device {device}")
    peak = measured_matmul_peak(device, peak_size, peak_repeats, torch.float32)
    bf16 = measured_matmul_peak(device, peak_size, max(peak_repeats // 2, 1), torch.bfloat16)
    verdict = "faster than fp32" if bf16 > 1.2 * peak else "not faster than fp32 here: training stays fp32"
    tf32 = (f" (TF32 matmul {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'})"
            if device.type == "cuda" else "")
    print(f"measured fp32 matmul peak: {peak:.1f} GFLOP/s{tf32}; bf16: {bf16:.1f} GFLOP/s ({verdict}); "
          f"best of {peak_repeats} {peak_size}x{peak_size} matmuls (bf16: of {max(peak_repeats // 2, 1)}, "
          f"or of one where it took over {SLOW_MATMUL_SECONDS:g} s)")
    return peak


# ---- the loop of separate networks --------------------------------------------------

class LoopEnsemble(nn.Module):
    """N separate networks run one after the other, with ``EnsembleBERT4Rec``'s
    interface (``forward -> (N, B, T, d)``, ``logits``, ``attribute_logits``,
    ``n_networks``, ``n_items``, ``mask_token``, ``item_attributes``).

    ``stacked=True``: each network is a one-network ``EnsembleBERT4Rec``
    (inputs and outputs carry its network axis of 1); ``False``: each is an
    ``encoders.BERT4Rec``, with a separate ``nn.Linear`` attribute head.
    """

    def __init__(self, networks, attribute_heads, ensemble: EnsembleBERT4Rec, stacked: bool):
        super().__init__()
        self.networks = nn.ModuleList(networks)
        self.attribute_heads = None if attribute_heads is None else nn.ModuleList(attribute_heads)
        self.stacked = stacked
        self.n_networks, self.n_items, self.mask_token = ensemble.n_networks, ensemble.n_items, ensemble.mask_token
        self.register_buffer("item_attributes", ensemble.item_attributes, persistent=False)

    @classmethod
    def same_architecture(cls, ensemble: EnsembleBERT4Rec) -> "LoopEnsemble":
        """N one-network ensembles of ``ensemble``'s architecture, its weights sliced network by network."""
        state = ensemble.state_dict()
        networks = []
        for n in range(ensemble.n_networks):
            net = EnsembleBERT4Rec(1, ensemble.n_items, ensemble.max_len, ensemble.hidden, ensemble.n_blocks,
                                   ensemble.n_heads, ensemble.dropout, item_attributes=ensemble.item_attributes,
                                   output_layer=ensemble.output_layer, scale_embeddings=ensemble.scale_embeddings)
            net.load_state_dict({name: value[n:n + 1] for name, value in state.items()})
            networks.append(net.to(next(ensemble.parameters()).device).train(ensemble.training))
        return cls(networks, None, ensemble, stacked=True)

    @classmethod
    def bert4rec_modules(cls, ensemble: EnsembleBERT4Rec) -> "LoopEnsemble":
        """N ``encoders.BERT4Rec`` (``ensemble.network(n)``; needs BERT4Rec's
        output layer and scaled embeddings) and N linear attribute heads."""
        networks = [ensemble.network(n) for n in range(ensemble.n_networks)]
        heads = None
        if ensemble.attribute_head is not None:
            heads = []
            for n in range(ensemble.n_networks):
                head = nn.Linear(ensemble.hidden, ensemble.n_attributes)
                with torch.no_grad():
                    head.weight.copy_(ensemble.attribute_head.weight[n])
                    head.bias.copy_(ensemble.attribute_head.bias[n])
                heads.append(head.to(ensemble.attribute_head.weight.device))
        return cls(networks, heads, ensemble, stacked=False)

    def forward(self, ids):
        if self.stacked:
            return torch.cat([net(ids) for net in self.networks])
        return torch.stack([net(ids) for net in self.networks])

    def logits(self, hidden):
        if self.stacked:
            return torch.cat([net.logits(h[None]) for net, h in zip(self.networks, hidden)])
        return torch.stack([net.logits(h) for net, h in zip(self.networks, hidden)])

    def attribute_logits(self, hidden):
        if self.stacked:
            return torch.cat([net.attribute_logits(h[None]) for net, h in zip(self.networks, hidden)])
        return torch.stack([head(h) for head, h in zip(self.attribute_heads, hidden)])


# ---- timing ---------------------------------------------------------------------------

def time_training(model, recipe, examples, timed_examples, train: TrainConfig, device, warmup: int) -> float:
    """Seconds of ``train_one_epoch`` on ``timed_examples`` after ``warmup`` batches of warm-up."""
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay,
                                 fused=device.type in ("cpu", "cuda"))
    generator = torch.Generator(device=device).manual_seed(0)
    if warmup:
        warm = examples[:warmup * train.batch_size]
        train_one_epoch(model, recipe, warm, optimizer, train, np.random.default_rng(1), generator, device)
    _sync(device)
    t0 = time.perf_counter()
    train_one_epoch(model, recipe, timed_examples, optimizer, train, np.random.default_rng(2), generator, device)
    _sync(device)
    return time.perf_counter() - t0


def timed_batches_of(timed_examples, batch_size: int) -> list[np.ndarray]:
    """The batches ``train_one_epoch`` cuts from ``timed_examples`` under ``time_training``'s rng (seed 2)."""
    lengths = np.fromiter((len(e) for e in timed_examples), dtype=np.int64, count=len(timed_examples))
    return [lengths[idx] for idx in
            length_bucketed_batches(lengths, batch_size, shuffle=True, rng=np.random.default_rng(2))]


def prepared(config: RunConfig):
    """What every benchmark times on: the run's data, its model built from
    seed 0, its training examples and their length-bucketed batches (a fixed
    shuffle), as ``(dataset, split, model, recipe, examples, batches)``."""
    dataset, split = run_data(config)
    torch.manual_seed(0)
    model, recipe = build_method(config, dataset)
    examples = recipe.make_examples(split.train)
    lengths = np.array([len(e) for e in examples])
    batches = length_bucketed_batches(lengths, config.train.batch_size, shuffle=True, rng=np.random.default_rng(0))
    return dataset, split, model, recipe, examples, batches


def alternated_rates(config: RunConfig, versions, batches: int, rounds: int, device) -> dict[str, list[float]]:
    """Training sequences/s of two versions of the code, alternated on the
    same model and batches (the first ``batches`` of ``prepared``):
    ``versions`` are ``(label, use)`` pairs, ``use()`` switching the library
    to that version; ``rounds`` pairs of measurements, the order flipped every
    round, so the load of other processes on a shared machine drifts over
    both alike. A run of separate commands, one per version, cannot tell a
    10% change apart from the load's swings on a busy machine."""
    _, _, model, recipe, examples, order = prepared(config)
    timed = [examples[i] for idx in order[:batches] for i in idx]
    rates = {label: [] for label, _ in versions}
    for r in range(rounds * 2):
        for label, use in (versions if r % 2 == 0 else versions[::-1]):
            use()
            rates[label].append(len(timed) / time_training(model, recipe, examples, timed, config.train, device, 1))
    return rates


def alternated_line(name: str, config: RunConfig, rates: dict[str, list[float]]) -> tuple[str, float]:
    """``alternated_rates``' line (``report.performance.interleaved_speedups``
    reads it) and the ratio of the second version's median to the first's."""
    (before, slow), (after, fast) = rates.items()
    speedup = float(np.median(fast) / np.median(slow))
    return (f"{name}[{config.train.precision}] {config.dataset} [{config.profile}]: {before} "
            f"{', '.join(f'{x:.1f}' for x in slow)}, {after} {', '.join(f'{x:.1f}' for x in fast)} "
            f"sequences/s; speed-up of the medians {speedup:.3f}x"), speedup


def benchmark_method(name: str, args, device: torch.device, peak: float, overrides: dict) -> dict:
    method, encoder = parse_method(name)
    config = profile_config(args.profile, args.dataset, method, encoder=encoder, **overrides)
    dataset, split, model, recipe, examples, batches = prepared(config)
    n_attributes = dataset.attributes.n_attributes if dataset.attributes else 0
    model.to(device)
    batch_size = config.train.batch_size
    timed = batches[:args.max_batches] if args.max_batches else batches
    timed_examples = [examples[i] for idx in timed for i in idx]
    warmup = min(WARMUP_BATCHES, max(args.max_batches // 2, 1)) if args.max_batches else WARMUP_BATCHES
    run_lengths = timed_batches_of(timed_examples, batch_size)
    flops = 3 * 2 * sum(forward_macs(config, dataset.n_items, n_attributes, ls) for ls in run_lengths)

    bound = "" if method in COUNTED_METHODS else ">="  # forward_macs knows only some methods' extra terms

    def report(label, seconds, flops=flops):
        rate = flops / seconds / 1e9
        print(f"{label:12s} {args.dataset} [{args.profile}]: {len(timed_examples) / seconds:8.0f} sequences/s, "
              f"{seconds * len(examples) / len(timed_examples):7.1f} s/epoch ({len(examples)} training sequences, "
              f"{len(batches)} batches of {batch_size}; timed {len(run_lengths)}), "
              f"{bound}{rate:6.1f} GFLOP/s = {bound}{100 * rate / peak:4.1f}% of peak")

    seconds = time_training(model, recipe, examples, timed_examples, config.train, device, warmup)
    label = method_name(config.method, config.encoder)
    report(label, seconds)
    result = {"method": label, "seconds": seconds, "sequences": len(timed_examples),
              "sequences_per_s": len(timed_examples) / seconds, "useful_flops": flops}

    if args.autocast == "bf16":
        torch.manual_seed(0)
        fresh, fresh_recipe = build_method(config, dataset)   # the same initial weights as the fp32 run
        bf16_seconds = time_training(fresh.to(device), with_precision(fresh_recipe, "bf16", device), examples,
                                     timed_examples, config.train, device, warmup)
        report(f"{label}[bf16]", bf16_seconds)
        print(f"{'':12s} bf16 autocast speed-up over fp32 on the same batches: {seconds / bf16_seconds:.2f}x "
              f"(share of the fp32 peak)")
        result["bf16_seconds"] = bf16_seconds

    if args.compile:
        # Each side from the same initial weights gets one untimed pass over the timed batches, then a timed
        # one: the compiled model's first pass compiles every batch shape (length buckets), and the eager
        # side is warmed as long, so that neither timing holds a cold start.
        timed_pass = {}
        for side in ("eager", "compiled"):
            torch.manual_seed(0)
            fresh, _ = build_method(config, dataset)
            fresh = fresh.to(device) if side == "eager" else torch.compile(fresh.to(device))
            first = time_training(fresh, recipe, examples, timed_examples, config.train, device, warmup)
            timed_pass[side] = time_training(fresh, recipe, examples, timed_examples, config.train, device, warmup)
            report(f"{label}[{side}]", timed_pass[side])
            if side == "compiled":
                print(f"{'':12s} torch.compile speed-up over eager on the same batches, both after one pass, the "
                      f"compiling one (it took {first:.0f} s): {timed_pass['eager'] / timed_pass['compiled']:.2f}x")
        result["compiled_seconds"] = timed_pass["compiled"]

    if isinstance(model, EnsembleBERT4Rec) and args.loop != "none":
        def compare(loop, batched_seconds, what):
            loop_seconds = time_training(loop, recipe, examples, timed_examples, config.train, device, warmup)
            print(f"{'':12s} loop of {loop.n_networks} separate {what} on the same batches: "
                  f"{len(timed_examples) / loop_seconds:8.0f} sequences/s; "
                  f"batched ensemble speed-up {loop_seconds / batched_seconds:.2f}x")
            return loop_seconds

        if args.loop in ("same", "both"):
            torch.manual_seed(0)
            fresh, _ = build_method(config, dataset)  # the loop starts from the batched model's initial weights
            result["loop_same_seconds"] = compare(LoopEnsemble.same_architecture(fresh.to(device)), seconds,
                                                  f"networks of the same architecture (output_layer="
                                                  f"{config.params.output_layer!r}, scale_embeddings="
                                                  f"{config.params.scale_embeddings})")
        if args.loop in ("bert4rec", "both"):
            b_config = config.replace(params__output_layer="bert4rec", params__scale_embeddings=True)
            if b_config != config:
                torch.manual_seed(0)
                b_model, b_recipe = build_method(b_config, dataset)
                b_flops = 3 * 2 * sum(forward_macs(b_config, dataset.n_items, n_attributes, ls) for ls in run_lengths)
                b_seconds = time_training(b_model.to(device), b_recipe, examples, timed_examples, b_config.train,
                                          device, warmup)
                report(f"{label}[b4r]", b_seconds, b_flops)
                result["bert4rec_layer_seconds"] = b_seconds
            else:
                b_seconds = seconds
            torch.manual_seed(0)
            b_fresh, _ = build_method(b_config, dataset)
            result["loop_bert4rec_seconds"] = compare(LoopEnsemble.bert4rec_modules(b_fresh.to(device)), b_seconds,
                                                      "encoders.BERT4Rec modules (BERT4Rec output layer, "
                                                      "scaled embeddings)")
    elif method == "emkd" and args.loop != "none":
        print(f"{'':12s} ({config.encoder} networks already run one after the other: EncoderEnsemble)")
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--profile", default="cpu", choices=("smoke", "cpu", "paper"))
    parser.add_argument("--methods", nargs="+", default=["sasrec", "bert4rec"],
                        help="method names, or METHOD-ENCODER (emkd-sasrec) for EMKD on another encoder")
    parser.add_argument("--max-batches", "--batches", dest="max_batches", type=int, default=None,
                        help="time only this many batches (default: a full epoch); the warm-up is then "
                             "at most half as many (at least one)")
    parser.add_argument("--loop", default="same", choices=("same", "bert4rec", "both", "none"),
                        help="EMKD's loop of separate networks (see above)")
    parser.add_argument("--set", dest="overrides", action="append", type=parse_override, default=[],
                        metavar="KEY=VALUE", help="config override keyed like RunConfig.replace, repeatable")
    parser.add_argument("--autocast", default="none", choices=("none", "bf16"),
                        help="bf16: also time each method with its loss's forward under bf16 autocast")
    parser.add_argument("--compile", action="store_true",
                        help="also time each method's model under torch.compile (inductor; dropout draws "
                             "eager's random stream), after one pass that compiles it")
    parser.add_argument("--peak-size", type=int, default=2048, help="matrix size of the peak matmuls")
    parser.add_argument("--peak-repeats", type=int, default=10)
    add_process_arguments(parser)
    return parser


def add_process_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the process a benchmark measures in (this one's and ``step_profile.py``'s)."""
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--malloc-default", action="store_true",
                        help="leave glibc's malloc as it is (the CLI calls process.keep_freed_cpu_memory)")


def start_process(args) -> torch.device:
    """Threads and malloc as ``add_process_arguments`` asked, every method
    name of ``args.methods`` checked before anything is measured; the device."""
    configure_process(args.threads, keep_freed_memory=not args.malloc_default)
    for name in args.methods:
        parse_method(name)
    return resolve_device(args.device)


def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    device = start_process(args)
    if args.compile:
        import torch._inductor.config as inductor_config
        inductor_config.fallback_random = True
    torch.manual_seed(0)
    peak = print_machine(device, args.peak_size, args.peak_repeats)
    overrides = dict(args.overrides)
    return [benchmark_method(name, args, device, peak, overrides) for name in args.methods]


if __name__ == "__main__":
    main()
