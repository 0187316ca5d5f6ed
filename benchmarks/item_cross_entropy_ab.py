"""EMKD's masked item prediction, two ways, in one process: autograd through
``F.cross_entropy`` against the hand-written gradient of
``losses.masked_item_prediction_loss`` (``losses._ItemCrossEntropy``).

The two alternate step by step on the same model and batches
(``train_throughput.alternated_rates``: ``--rounds`` pairs, the order
flipped every round); the medians of their training throughputs and their
ratio are printed per method.

    python benchmarks/item_cross_entropy_ab.py --threads 1
    python benchmarks/item_cross_entropy_ab.py --methods emkd-sasrec --set params__n_networks=3 \
        --set data__max_users=3000 --rounds 2   # Figure 4's EMKD, every position scored
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import alternated_line, alternated_rates, parse_override, print_header  # noqa: E402

from emkd_lib import losses  # noqa: E402
from emkd_lib.methods import parse_method  # noqa: E402
from emkd_lib.profiles import profile_config  # noqa: E402


def autograd_item_prediction_loss(logits, targets, weights=None):
    """The library's masked item prediction before the hand-written gradient."""
    N, P, V = logits.shape
    ce = F.cross_entropy(logits.reshape(N * P, V), targets.repeat(N), reduction="none").view(N, P)
    return (ce * losses._position_weights(weights, P, ce.dtype, ce.device, "masked_item_prediction_loss")).sum()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["emkd"])
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--set", dest="overrides", action="append", type=parse_override, default=[])
    parser.add_argument("--batches", type=int, default=4, help="batches timed per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of measurements per method")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    print_header(device)
    fused = losses.masked_item_prediction_loss

    def using(loss):
        def use():
            losses.masked_item_prediction_loss = loss
        return use

    versions = (("item cross entropy through autograd", using(autograd_item_prediction_loss)),
                ("hand-written", using(fused)))
    speedups = {}
    try:
        for name in args.methods:
            method, encoder = parse_method(name)
            config = profile_config(args.profile, args.dataset, method, encoder=encoder, **dict(args.overrides))
            line, speedups[name] = alternated_line(name, config, alternated_rates(config, versions, args.batches,
                                                                                 args.rounds, device))
            print(line)
    finally:
        losses.masked_item_prediction_loss = fused
    return speedups


if __name__ == "__main__":
    main()
