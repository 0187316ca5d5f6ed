"""Command line entry point for background campaigns.

    python -m emkd_lib run --profile cpu --dataset beauty --method sasrec --seed 0
    python -m emkd_lib grid baselines --profile cpu --datasets beauty toys --seeds 0 1
    python -m emkd_lib --threads 1 grid emkd-encoders --profile cpu --shard 0/2   # and 1/2 in a second process
    python -m emkd_lib ensemble --profile cpu --dataset beauty --method sasrec --seeds 1 2
    python -m emkd_lib list
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from .experiments import (GRIDS, PROFILES, ensemble_run_or_load, execute, load_result, profile_config, result_path,
                          results_dir, run_grid)


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        shard, n_shards = (int(x) for x in text.split("/"))
    except ValueError:
        raise SystemExit(f"--shard must look like I/K (e.g. 0/2), got {text!r}") from None
    if not 0 <= shard < n_shards:
        raise SystemExit(f"--shard {text}: need 0 <= I < K")
    return shard, n_shards


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emkd_lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run (or load) one configuration")
    run.add_argument("--profile", choices=PROFILES, required=True)
    run.add_argument("--dataset", required=True)
    run.add_argument("--method", required=True)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (CUDA when present)")
    run.add_argument("--force", action="store_true", help="retrain even if a stored result exists")

    grid = sub.add_parser("grid", help="run (or load) a named grid of configurations")
    grid.add_argument("name", choices=sorted(GRIDS))
    grid.add_argument("--profile", choices=PROFILES, required=True)
    grid.add_argument("--datasets", nargs="+")
    grid.add_argument("--seeds", nargs="+", type=int, default=[0])
    grid.add_argument("--methods", nargs="+")
    grid.add_argument("--device", default="auto")
    grid.add_argument("--shard", default="0/1", metavar="I/K",
                      help="run only configs I, I+K, I+2K, ... of the grid (K processes share one grid)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (e.g. 1 per process when running two)")

    ens = sub.add_parser("ensemble", help="evaluate stored runs of several seeds as one ensemble")
    ens.add_argument("--profile", choices=PROFILES, required=True)
    ens.add_argument("--dataset", required=True)
    ens.add_argument("--method", required=True)
    ens.add_argument("--seeds", nargs="+", type=int, required=True)
    ens.add_argument("--device", default="auto")

    sub.add_parser("list", help="list stored results")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.command == "run":
        config = profile_config(args.profile, args.dataset, args.method, seed=args.seed)
        if args.force or not result_path(config).exists():
            result = execute(config, device=args.device)
        else:
            result = load_result(result_path(config))
        print(f"{config.name()}: test {result.test_metrics}")
    elif args.command == "grid":
        kwargs = {"seeds": tuple(args.seeds)}
        if args.datasets:
            kwargs["datasets"] = tuple(args.datasets)
        if args.methods:
            kwargs["methods"] = tuple(args.methods)
        shard, n_shards = _parse_shard(args.shard)
        configs = GRIDS[args.name](args.profile, **kwargs)[shard::n_shards]
        for result in run_grid(configs, device=args.device):
            print(f"{result.config.name()}: test NDCG@10 {result.test_metrics['NDCG@10']:.4f}")
    elif args.command == "ensemble":
        members = [profile_config(args.profile, args.dataset, args.method, seed=s) for s in args.seeds]
        result = ensemble_run_or_load(members, device=args.device)
        print(f"{result.path.name}: test NDCG@10 {result.test_metrics['NDCG@10']:.4f}")
    elif args.command == "list":
        for path in sorted(results_dir().glob("*/*.json")):
            if path.name.startswith("ensemble"):
                record = json.loads(path.read_text())
                print(f"{path.relative_to(results_dir())}: test NDCG@10 {record['test_metrics']['NDCG@10']:.4f}")
                continue
            r = load_result(path)
            print(f"{path.relative_to(results_dir())}: valid NDCG@10 {r.valid_metrics['NDCG@10']:.4f} "
                  f"test NDCG@10 {r.test_metrics['NDCG@10']:.4f} ({r.train_seconds:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
