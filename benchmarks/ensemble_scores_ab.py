"""Figure 4's EMKD (N networks of a next-item encoder) before and after its
scores were formed in place, in one process.

Every position of every view is scored, so the (networks x positions x
catalogue) scores and their KD gradient are the largest tensors of a step.
Before: ``EncoderEnsemble.logits`` stacked the N networks' score matrices
into a new tensor (a copy of the whole), and ``_MutualKL`` copied each
chunk's gradient into the (N, P, V) gradient. After: one batched product
over the stacked output layers, and each chunk's gradient formed in its
place. The values are the same bit for bit (tests/test_emkd_encoders.py,
tests/test_losses.py); only the time differs.

The two versions alternate step by step on the same model and batches
(``train_throughput.alternated_rates``), under the malloc policy runs train
with (``process.keep_freed_cpu_memory``):

    python benchmarks/ensemble_scores_ab.py --threads 1 --rounds 2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import alternated_line, alternated_rates, parse_override, print_header  # noqa: E402

from emkd_lib import losses  # noqa: E402
from emkd_lib.methods import parse_method  # noqa: E402
from emkd_lib.models.ensemble import EncoderEnsemble  # noqa: E402
from emkd_lib.process import configure_process  # noqa: E402
from emkd_lib.profiles import profile_config  # noqa: E402


def stacked_logits(self, hidden: torch.Tensor) -> torch.Tensor:
    """``EncoderEnsemble.logits`` before: each network's scores, then a stack."""
    return torch.stack([network.logits(h) for network, h in zip(self.networks, hidden)])


def copied_kd_forward(ctx, logits, weights, temperature, detach_teacher, rows=losses.KD_CHUNK_POSITIONS):
    """``_MutualKL.forward`` before: each chunk's gradient formed apart, then copied in."""
    N, P, V = logits.shape
    kl = gradient = None
    for start in range(0, P, rows):
        chunk = slice(start, start + rows)
        q, f, kl_chunk = losses._mutual_kl_parts(logits[:, chunk], temperature)
        g = losses._mutual_kl_logit_gradient(q, f, kl_chunk, detach_teacher) if ctx.needs_input_grad[0] else None
        if kl is None:
            kl = kl_chunk.new_empty((N, P))
            gradient = None if g is None else g.new_empty((N, P, V))
        kl[:, chunk] = kl_chunk
        if g is not None:
            gradient[:, chunk] = g
    if kl is None:
        kl = logits.new_zeros((N, P))
    ctx.save_for_backward(gradient, weights)
    ctx.temperature = temperature
    return (kl * weights).sum()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["emkd-gru4rec", "emkd-sasrec"])
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--networks", type=int, default=3, help="EMKD's N")
    parser.add_argument("--users", type=int, default=3000,
                        help="Figure 4's user sample (data__max_users); 0: every user")
    parser.add_argument("--set", dest="overrides", action="append", type=parse_override, default=[])
    parser.add_argument("--batches", type=int, default=4, help="batches timed per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of measurements per method")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    configure_process(args.threads, keep_freed_memory=True)
    device = torch.device("cpu")
    print_header(device)
    batched, in_place = EncoderEnsemble.logits, losses._MutualKL.forward

    def using(logits, kd_forward):
        def use():
            EncoderEnsemble.logits = logits
            losses._MutualKL.forward = staticmethod(kd_forward)
        return use

    versions = (("scores stacked, KD gradient copied", using(stacked_logits, copied_kd_forward)),
                ("batched and in place", using(batched, in_place)))
    speedups = {}
    try:
        for name in args.methods:
            method, encoder = parse_method(name)
            sample = {"data__max_users": args.users} if args.users else {}
            config = profile_config(args.profile, args.dataset, method, encoder=encoder,
                                    params__n_networks=args.networks, **sample, **dict(args.overrides))
            line, speedups[name] = alternated_line(name, config, alternated_rates(config, versions, args.batches,
                                                                                 args.rounds, device))
            print(line)
    finally:
        EncoderEnsemble.logits = batched
        losses._MutualKL.forward = staticmethod(in_place)
    return speedups


if __name__ == "__main__":
    main()
