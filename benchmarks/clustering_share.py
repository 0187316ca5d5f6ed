"""What clustering costs S^4Rec and ICLRec per epoch: S^4Rec's scalability argument.

S^4Rec clusters online: Sinkhorn-Knopp on each batch's (B x K) prototype
scores, inside the training step (``clustering.sinkhorn``). ICLRec clusters
offline: once per epoch it encodes every training sequence and runs K-means
on the representations (``Recipe.on_epoch_start``: ``encode_sequences`` +
``clustering.kmeans``), before the epoch's first step.

For each method (cpu profile by default, Beauty) this script times
``--batches`` training steps after a warm-up, with the clustering calls
timed from the outside (the module's ``sinkhorn`` / ``kmeans`` wrapped for
the duration), and ICLRec's epoch-start clustering once. It prints the
epoch's training seconds (per-batch time x the epoch's batches), the
clustering seconds per epoch, and their share of the epoch:

    python benchmarks/clustering_share.py --threads 1
    python benchmarks/clustering_share.py --profile smoke --batches 2   # a seconds-long check
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import load_note, parse_override, prepared, time_training  # noqa: E402

from emkd_lib.methods import iclrec, s4rec  # noqa: E402
from emkd_lib.process import configure_process  # noqa: E402
from emkd_lib.profiles import profile_config  # noqa: E402
from emkd_lib.store import machine_name  # noqa: E402
from emkd_lib.train import resolve_device  # noqa: E402

# method -> (module whose clustering function is timed, that function's name there)
CLUSTERING = {"s4rec": (s4rec, "sinkhorn"), "iclrec": (iclrec, "kmeans")}


@contextlib.contextmanager
def timed(module, name: str, seconds: list):
    """``module.name`` replaced by a wrapper that adds each call's seconds to ``seconds``."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - t0)

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


def measure(method: str, args, device: torch.device, overrides: dict) -> dict:
    config = profile_config(args.profile, args.dataset, method, **overrides)
    _, _, model, recipe, examples, batches = prepared(config)
    model.to(device)
    timed_batches = batches[:args.batches]
    timed_examples = [examples[i] for idx in timed_batches for i in idx]
    module, name = CLUSTERING[method]
    epoch_start = []
    if recipe.on_epoch_start is not None:
        # the first epoch that clusters (ICLRec's warm-up epochs do not)
        first = getattr(config.params, "warm_up_epochs", 0) + 1
        with timed(module, name, []):
            t0 = time.perf_counter()
            recipe.on_epoch_start(first)
            epoch_start.append(time.perf_counter() - t0)
    in_steps: list[float] = []
    with timed(module, name, in_steps):
        seconds = time_training(model, recipe, examples, timed_examples, config.train, device, warmup=1)
    # the warm-up's calls are in in_steps too: keep the timed batches' share only
    per_batch_calls = len(in_steps) / (args.batches + 1) if in_steps else 0
    step_clustering = sum(in_steps[-int(per_batch_calls * args.batches):]) if per_batch_calls else 0.0
    scale = len(batches) / len(timed_batches)
    epoch_train = seconds * scale
    clustering = step_clustering * scale + sum(epoch_start)
    return {"method": method, "batches": len(batches), "timed": len(timed_batches),
            "epoch_train_s": epoch_train, "clustering_s": clustering,
            "epoch_start_s": sum(epoch_start), "share": clustering / (epoch_train + sum(epoch_start))}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--profile", default="cpu", choices=("smoke", "cpu", "paper"))
    parser.add_argument("--methods", nargs="+", default=list(CLUSTERING), choices=list(CLUSTERING))
    parser.add_argument("--batches", type=int, default=20, help="timed training batches (after one warm-up)")
    parser.add_argument("--set", dest="overrides", action="append", type=parse_override, default=[],
                        metavar="KEY=VALUE", help="config override keyed like RunConfig.replace, repeatable")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    configure_process(args.threads, keep_freed_memory=True)
    device = resolve_device(args.device)
    note = load_note()
    if note:
        print(note)
    print(f"clustering per epoch on {machine_name(device)}; torch {torch.__version__}")
    results = []
    for method in args.methods:
        r = measure(method, args, device, dict(args.overrides))
        where = "Sinkhorn in every step" if method == "s4rec" else "K-means once per epoch (encoding + fit)"
        print(f"{method:8s} {args.dataset} [{args.profile}]: {r['epoch_train_s']:8.1f} s/epoch of training "
              f"({r['batches']} batches, {r['timed']} timed), clustering {r['clustering_s']:7.2f} s/epoch "
              f"= {100 * r['share']:5.2f}% of the epoch ({where})")
        results.append(r)
    return results


if __name__ == "__main__":
    main()
