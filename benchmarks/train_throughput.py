"""Training throughput of the core on a real dataset.

Prints, per method: training sequences per second, seconds per epoch, the
achieved GFLOP/s and its share of this machine's measured fp32 matmul peak.
Model FLOPs are counted analytically from the batches actually run (see
``forward_macs``); the peak is the best of several large square matmuls.
For EMKD it also times N separate BERT4Rec networks run one after the other
(``LoopEnsemble``) on the same batches, and prints the batched ensemble's
speed-up over that loop.

    python benchmarks/train_throughput.py --dataset beauty --profile cpu
    python benchmarks/train_throughput.py --methods emkd --profile paper --batches 20

Numbers go to stdout only; the test suite never times anything.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from emkd_lib.batching import length_bucketed_batches
from emkd_lib.data import leave_one_out, load_dataset
from emkd_lib.experiments import machine_name, profile_config
from emkd_lib.methods import EMKDParams, build_method
from emkd_lib.train import TrainSettings, keep_freed_cpu_memory, resolve_device, train_one_epoch


class LoopEnsemble(nn.Module):
    """The reference for EMKD's batched ensemble: N separate BERT4Rec modules
    run one after the other, with the interface of ``EnsembleBERT4Rec``."""

    def __init__(self, ensemble):
        super().__init__()
        self.networks = nn.ModuleList(ensemble.network(n) for n in range(ensemble.n_networks))
        self.n_networks, self.n_items, self.mask_token = ensemble.n_networks, ensemble.n_items, ensemble.mask_token
        self.register_buffer("item_attributes", ensemble.item_attributes, persistent=False)
        self.attribute_heads = nn.ModuleList(nn.Linear(ensemble.hidden, ensemble.n_attributes)
                                             for _ in self.networks)

    def forward(self, ids):
        return torch.stack([net(ids) for net in self.networks])

    def logits(self, hidden):
        return torch.stack([net.logits(h) for net, h in zip(self.networks, hidden)])

    def attribute_logits(self, hidden):
        return torch.stack([head(h) for head, h in zip(self.attribute_heads, hidden)])


def measured_matmul_peak(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    """Best observed fp32 GFLOP/s of an n x n matmul."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def forward_macs(method: str, config, n_items: int, n_attributes: int, lengths: np.ndarray) -> float:
    """Multiply-accumulates of one forward pass over a batch of training examples.

    Transformer block per token: QKV and output projections (4 d^2), FFN
    (8 d^2), attention scores and weighted values (2 T d). Scoring: d * n_items
    per position that carries a loss (plus BERT4Rec's d^2 projection head);
    masked positions are the expected share ``mask_prob`` of tokens. GRU: 6 d^2
    per token. Caser: its convolutions and FC per token. EMKD: N networks on the
    original and its M views, scoring at the views' masked positions, attribute
    prediction at every original token, and the (B x B) similarities of the
    flattened (T x d) hidden matrices for ICL and CCL.
    """
    d = config.hidden
    width, tokens = int(lengths.max()), int(lengths.sum())
    masked = float(np.maximum(config.mask_prob * lengths, 1).sum())
    if method in ("sasrec", "gru4rec", "caser"):  # next-item windows: input = w[:-1]
        width, tokens = width - 1, tokens - len(lengths)
    if method in ("sasrec", "bert4rec", "emkd"):
        encoder = config.n_blocks * tokens * (12 * d * d + 2 * width * d)
    if method == "sasrec":
        return encoder + tokens * d * n_items
    if method == "bert4rec":
        return encoder + masked * (d * d + d * n_items)
    if method == "gru4rec":
        return tokens * 6 * d * d + tokens * d * n_items
    if method == "caser":
        L, n_h, n_v = dict(config.params).get("window", 5), 16, 4
        conv = sum(h * d * n_h for h in range(1, L + 1)) + L * d * n_v + (n_h * L + n_v * d) * d
        return tokens * conv + tokens * d * n_items
    if method == "emkd":
        p = EMKDParams.from_params(config.params)
        B, N, M = len(lengths), p.n_networks, p.n_views
        contrast = (N + N * (N - 1)) * B * B * (M + 1) * width * d
        return (N * (M + 1) * encoder + N * M * masked * (d * d + d * n_items)
                + N * tokens * d * n_attributes + contrast)
    raise ValueError(method)


def time_epoch(model, recipe, examples, timed_examples, config, device) -> float:
    """Seconds to train on ``timed_examples`` after a short warm-up."""
    settings = TrainSettings(epochs=1, batch_size=config.batch_size, lr=config.lr, grad_clip=config.grad_clip)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=device.type in ("cpu", "cuda"))
    generator = torch.Generator(device=device).manual_seed(0)
    warm = examples[:3 * config.batch_size]
    train_one_epoch(model, recipe, warm, optimizer, settings, np.random.default_rng(1), generator, device)
    _sync(device)
    t0 = time.perf_counter()
    train_one_epoch(model, recipe, timed_examples, optimizer, settings, np.random.default_rng(2), generator, device)
    _sync(device)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--methods", nargs="+", default=["sasrec", "bert4rec"])
    parser.add_argument("--batches", type=int, default=None, help="time only this many batches (default: a full epoch)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--malloc-default", action="store_true",
                        help="leave glibc's malloc as it is (fit() calls keep_freed_cpu_memory)")
    args = parser.parse_args()
    if not args.malloc_default:
        keep_freed_cpu_memory()

    device = resolve_device(args.device)
    torch.manual_seed(0)
    peak = measured_matmul_peak(device)
    print(f"machine: {machine_name(device)}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    print(f"measured fp32 matmul peak: {peak:.1f} GFLOP/s")
    dataset = load_dataset(args.dataset)
    split = leave_one_out(dataset.sequences)
    n_attributes = dataset.attributes.n_attributes if dataset.attributes else 0
    for method in args.methods:
        config = profile_config(args.profile, args.dataset, method)
        torch.manual_seed(0)
        model, recipe = build_method(config, dataset)
        model.to(device)
        examples = recipe.make_examples(split.train)
        lengths = np.array([len(e) for e in examples])
        batches = length_bucketed_batches(lengths, config.batch_size, shuffle=True, rng=np.random.default_rng(0))
        timed = batches[:args.batches] if args.batches else batches
        timed_examples = [examples[i] for idx in timed for i in idx]
        flops = 3 * 2 * sum(forward_macs(method, config, dataset.n_items, n_attributes, lengths[idx]) for idx in timed)
        seconds = time_epoch(model, recipe, examples, timed_examples, config, device)
        per_epoch = seconds * len(examples) / len(timed_examples)
        print(f"{method:9s} {args.dataset} [{args.profile}]: {len(timed_examples) / seconds:8.0f} sequences/s, "
              f"{per_epoch:7.1f} s/epoch ({len(examples)} training sequences, {len(batches)} batches), "
              f"{flops / seconds / 1e9:6.1f} GFLOP/s = {100 * flops / seconds / 1e9 / peak:4.1f}% of peak")
        if method == "emkd":
            loop = LoopEnsemble(model).to(device)
            loop_seconds = time_epoch(loop, recipe, examples, timed_examples, config, device)
            print(f"{'':9s} loop of {model.n_networks} separate networks on the same batches: "
                  f"{len(timed_examples) / loop_seconds:8.0f} sequences/s; "
                  f"batched ensemble speed-up {loop_seconds / seconds:.2f}x")


if __name__ == "__main__":
    main()
