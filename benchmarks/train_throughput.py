"""Training throughput of the core on a real dataset.

Prints, per model: training sequences (examples) per second, seconds per
epoch, achieved GFLOP/s and its share of this machine's measured fp32 matmul
peak. Model FLOPs are counted analytically from the batches actually run
(see ``epoch_flops``); the peak is the best of several large square matmuls.

    python benchmarks/train_throughput.py --dataset beauty --profile cpu
    python benchmarks/train_throughput.py --models sasrec --batches 50

Numbers go to stdout only; the test suite never times anything.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from emkd_lib.batching import length_bucketed_batches, pad_left
from emkd_lib.data import leave_one_out, load_dataset
from emkd_lib.encoders import build_encoder
from emkd_lib.experiments import machine_name, profile_config
from emkd_lib.methods import baseline_recipe
from emkd_lib.train import TrainSettings, resolve_device, train_one_epoch


def measured_matmul_peak(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    """Best observed fp32 GFLOP/s of an n x n matmul."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def forward_macs(method: str, config, n_items: int, width: int, tokens: int, loss_positions: int) -> float:
    """Multiply-accumulates of one forward pass over a batch.

    Transformer block per token: QKV and output projections (4 d^2), FFN
    (8 d^2), attention scores and weighted values (2 T d). Scoring: d * n_items
    per position that carries a loss (plus BERT4Rec's d^2 projection head).
    GRU: 6 d^2 per token (three gates, input and hidden). Caser: the
    convolutions are counted per token (sum_h h d n_h + L d n_v) plus its FC.
    """
    d = config.hidden
    if method in ("sasrec", "bert4rec"):
        encoder = config.n_blocks * tokens * (12 * d * d + 2 * width * d)
        head = loss_positions * (d * n_items + (d * d if method == "bert4rec" else 0))
    elif method == "gru4rec":
        encoder = tokens * 6 * d * d
        head = loss_positions * d * n_items
    elif method == "caser":
        L, n_h, n_v = dict(config.params).get("window", 5), 16, 4
        encoder = tokens * (sum(h * d * n_h for h in range(1, L + 1)) + L * d * n_v
                            + (n_h * L + n_v * d) * d)
        head = loss_positions * d * n_items
    else:
        raise ValueError(method)
    return encoder + head


def epoch_flops(method, config, n_items, examples, batches) -> float:
    """Training FLOPs of one epoch: 3x the forward (forward + backward), 2 FLOPs per MAC.

    BERT4Rec's loss positions are the expected 15% of tokens (at least one per
    sequence), counted from the actual masks would need the random draw.
    """
    total = 0.0
    for idx in batches:
        lengths = np.array([len(examples[i]) for i in idx])
        if method == "bert4rec":
            width, tokens = lengths.max(), lengths.sum()
            loss_positions = np.maximum(config.mask_prob * lengths, 1).sum()
        else:
            width, tokens = lengths.max() - 1, (lengths - 1).sum()
            loss_positions = tokens
        total += forward_macs(method, config, n_items, width, tokens, loss_positions)
    return 3 * 2 * total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--models", nargs="+", default=["sasrec", "bert4rec"])
    parser.add_argument("--batches", type=int, default=None, help="time only this many batches (default: a full epoch)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.manual_seed(0)
    peak = measured_matmul_peak(device)
    print(f"machine: {machine_name(device)}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    print(f"measured fp32 matmul peak: {peak:.1f} GFLOP/s")
    dataset = load_dataset(args.dataset)
    split = leave_one_out(dataset.sequences)
    for method in args.models:
        config = profile_config(args.profile, args.dataset, method)
        model = build_encoder(method, dataset.n_items, config.max_len, hidden=config.hidden,
                              n_blocks=config.n_blocks, n_heads=config.n_heads, dropout=config.dropout,
                              **dict(config.params)).to(device)
        recipe = baseline_recipe(method, config.max_len, config.window_step, config.mask_prob)
        examples = recipe.make_examples(split.train)
        lengths = np.array([len(e) for e in examples])
        batches = length_bucketed_batches(lengths, config.batch_size, shuffle=True, rng=np.random.default_rng(0))
        timed = batches[:args.batches] if args.batches else batches
        timed_examples = [examples[i] for idx in timed for i in idx]
        settings = TrainSettings(epochs=1, batch_size=config.batch_size, lr=config.lr,
                                 grad_clip=config.grad_clip)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
        # warm-up on a few batches so one-off allocations are not timed
        warm = [examples[i] for idx in batches[:3] for i in idx]
        generator = torch.Generator(device=device).manual_seed(0)
        train_one_epoch(model, recipe, warm, optimizer, settings, np.random.default_rng(1), generator, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_one_epoch(model, recipe, timed_examples, optimizer, settings, np.random.default_rng(2), generator, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        flops = epoch_flops(method, config, dataset.n_items, examples, timed)
        per_epoch = seconds * len(examples) / len(timed_examples)
        print(f"{method:9s} {args.dataset} [{args.profile}]: {len(timed_examples) / seconds:8.0f} sequences/s, "
              f"{per_epoch:6.1f} s/epoch ({len(examples)} training sequences), "
              f"{flops / seconds / 1e9:6.1f} GFLOP/s = {100 * flops / seconds / 1e9 / peak:4.1f}% of peak")


if __name__ == "__main__":
    main()
