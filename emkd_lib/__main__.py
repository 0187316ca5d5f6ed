"""Command line entry point for background campaigns.

    python -m emkd_lib run --profile cpu --dataset beauty --method sasrec --seed 0
    python -m emkd_lib run --profile cpu --dataset beauty --method emkd --encoder sasrec --set params__n_networks=2
    python -m emkd_lib grid baselines --profile cpu --datasets beauty toys --seeds 0 1
    python -m emkd_lib --threads 1 grid emkd-encoders --profile cpu --shard 0/2   # and 1/2 in a second process
    python -m emkd_lib grid baselines --profile cpu --executor ray --address auto  # on a Ray cluster
    python -m emkd_lib grid s4rec-ablations --profile cpu --plan   # what is stored, in training, left to run
    python -m emkd_lib run --profile paper --dataset ml-1m --method emkd --device cuda --ddp 4  # one model, 4 GPUs
    python -m emkd_lib ensemble --profile cpu --dataset beauty --method sasrec --seeds 1 2
    python -m emkd_lib data add mydata --sequences my.txt [--attributes my_attrs.json]
    python -m emkd_lib list
    python -m emkd_lib compare results/ /tmp/other-store/   # the same runs, bit-identical?

``grid --executor ray`` trains the missing runs as Ray tasks and exits 1 if
any failed (each is reported; rerunning trains only what is still missing).
A run interrupted at any point resumes from its last epoch's checkpoint
(under ``$EMKD_CACHE_DIR``, default ``~/.cache/emkd-book``) when the same
command is given again. User errors print one line, ``emkd_lib: error: ...``,
and exit with status 2; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

from . import settings as settings_module
from .config import PROFILES
from .data import register_dataset
from .data.registry import DEFAULT_SETTINGS_LIKE, SETTINGS_SOURCES
from .distributed import launch
from .executors import EXECUTORS, Failure, GridOutcome, import_ray, run_grid_ray
from .extras import MissingExtra
from .parameters import DEVICE_NAMES, SEED_LIMIT, device_name
from .process import configure_process
from .profiles import profile_config
from .runs import add_analysis, ensemble_run_or_load, execute, grid_progress, grid_progress_at, run_grid, stored
from .store import (StoreError, code_commit, compare_stores, is_ensemble, result_from_record,
                    served_records)
from .studies import GRIDS
from .train import resolve_device


class UsageError(ValueError):
    pass


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        shard, n_shards = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard must look like I/K (e.g. 0/2), got {text!r}") from None
    if not 0 <= shard < n_shards:
        raise UsageError(f"--shard {text}: need 0 <= I < K")
    return shard, n_shards


def _parse_sets(pairs: list[str]) -> dict:
    """``KEY=VALUE`` overrides; VALUE is read as JSON (numbers, true/false, null), else a string."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UsageError(f"--set takes KEY=VALUE (e.g. train__epochs=5), got {pair!r}")
        key, value = pair.split("=", 1)
        if key in ("seed", "dataset", "method", "encoder", "profile"):
            raise UsageError(f"--set {key}=...: the {key} has its own option, --{key}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _data_overrides(args) -> dict:
    out = {}
    if getattr(args, "max_users", None) is not None:
        out["data__max_users"] = args.max_users
    if getattr(args, "on_short", None) is not None:
        out["data__on_short"] = args.on_short
    if getattr(args, "allow_modified_data", False):
        out["data__allow_modified"] = True
    if getattr(args, "remap_ids", False):
        out["data__remap_ids"] = True
    return out


def _add_data_options(p) -> None:
    p.add_argument("--max-users", type=int, help="a fixed subsample of this many users (the same for every seed)")
    p.add_argument("--on-short", choices=("error", "skip"), help="users with fewer than 3 items: error or skip")
    p.add_argument("--remap-ids", action="store_true", help="renumber item ids densely")
    p.add_argument("--allow-modified-data", action="store_true",
                   help="accept a bundled dataset file whose checksum differs (the run gets its own key)")


def _seed(text: str) -> int:
    if not text.isdigit() or int(text) >= SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 2**32 - 1, got {text!r}")
    return int(text)


def _device(text: str) -> str:
    """A device name; whether it exists is checked before any work (``_command``)."""
    try:
        return device_name("--device", text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {DEVICE_NAMES}, got {text!r}") from None


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, as every other error of the CLI."""

    def error(self, message):
        command = self.prog.removeprefix("python -m emkd_lib").strip()
        self.exit(2, f"emkd_lib: error: {command + ': ' if command else ''}{message} (see --help)\n")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m emkd_lib", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=_positive_int, help="torch CPU threads (e.g. 1 per process when running two)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run (or load) one configuration")
    run.add_argument("--profile", choices=PROFILES, required=True)
    run.add_argument("--dataset", required=True)
    run.add_argument("--method", required=True)
    run.add_argument("--encoder", help="the encoder the method runs on (default: its own)")
    run.add_argument("--seed", type=_seed, default=0)
    run.add_argument("--set", nargs="+", metavar="KEY=VALUE", help="overrides, e.g. train__epochs=5")
    run.add_argument("--device", type=_device, default="auto", help="cpu, cuda, cuda:1 or auto (CUDA when present)")
    run.add_argument("--force", action="store_true", help="retrain even if a stored result exists")
    run.add_argument("--ddp", type=int, metavar="N",
                     help="train the one model over N processes (DistributedDataParallel; on cuda, one GPU each)")
    _add_data_options(run)

    analyse = sub.add_parser("analyse", help="add the analysis arrays (figures' embeddings, clusters) to a "
                                             "stored run, from its saved weights")
    for name, kwargs in (("--profile", {"choices": PROFILES, "required": True}), ("--dataset", {"required": True}),
                         ("--method", {"required": True}), ("--encoder", {}), ("--seed", {"type": _seed, "default": 0}),
                         ("--set", {"nargs": "+", "metavar": "KEY=VALUE"})):
        analyse.add_argument(name, **kwargs)
    _add_data_options(analyse)

    grid = sub.add_parser("grid", help="run (or load) a named grid of configurations")
    grid.add_argument("name", choices=sorted(GRIDS))
    grid.add_argument("--profile", choices=PROFILES, required=True)
    grid.add_argument("--datasets", nargs="+")
    grid.add_argument("--seeds", nargs="+", type=_seed,
                      help="default: the grid's own (seed 0, or the seeds of a chapter's seed spread)")
    grid.add_argument("--methods", nargs="+", help="only for grids that take methods")
    grid.add_argument("--networks", nargs="+", type=int,
                      help="only for grids that take networks (emkd-encoders: N = 1 and 2 are light enough "
                           "to train beside another EMKD run)")
    grid.add_argument("--device", type=_device, default="auto")
    grid.add_argument("--shard", default="0/1", metavar="I/K",
                      help="run only configs I, I+K, I+2K, ... of the grid (K processes share one grid)")
    grid.add_argument("--executor", choices=EXECUTORS, default="local",
                      help="local: one run after another here; ray: one Ray task per missing run")
    grid.add_argument("--address", help="with --executor ray: the Ray cluster (default: $RAY_ADDRESS, else a "
                                        "new one on this machine)")
    grid.add_argument("--checkpointed-only", action="store_true",
                      help="train only the runs that have a checkpoint (resume what a session left half done "
                           "before starting anything new)")
    grid.add_argument("--precision", choices=("fp32", "bf16"),
                      help="train the runs neither stored nor checkpointed at their own precision at this one "
                           "instead (scripts/queue.sh: fp32 for the EMKD runs still missing, whose bf16 autocast "
                           "is slow on a CPU without bf16 units)")
    grid.add_argument("--plan", action="store_true",
                      help="train nothing: list each run as stored, checkpointed (how far) or not started, "
                           "with the CPU-hours left, priced from the stored runs of its method, dataset and "
                           "precision")
    _add_data_options(grid)

    ens = sub.add_parser("ensemble", help="evaluate stored runs of several seeds as one ensemble")
    ens.add_argument("--profile", choices=PROFILES, required=True)
    ens.add_argument("--dataset", required=True)
    ens.add_argument("--method", required=True)
    ens.add_argument("--seeds", nargs="+", type=_seed, required=True)
    ens.add_argument("--device", type=_device, default="auto")

    data = sub.add_parser("data", help="datasets: add your own")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    add = data_sub.add_parser("add", help="register a sequence file (user item item ... per line) as a dataset")
    add.add_argument("name")
    add.add_argument("--sequences", required=True)
    add.add_argument("--attributes", help="S3-Rec style JSON: {item: [attribute ids]}")
    add.add_argument("--data-dir", help="where the registry lives (default: $EMKD_DATA_DIR)")
    add.add_argument("--like", choices=SETTINGS_SOURCES, default=DEFAULT_SETTINGS_LIKE,
                     help="the paper dataset whose per-dataset settings (training windows, EMKD's tau, dropout "
                          "and heads) it takes: sparse data like Amazon's, beauty or toys; dense like MovieLens, ml-1m")

    sub.add_parser("list", help="list stored results (and the ones that cannot be served)")

    compare = sub.add_parser("compare", help="are the runs stored under two stores bit-identical? "
                                             "(exit 1 if any differs or none is in both)")
    compare.add_argument("stores", nargs=2, metavar="STORE", help="a results folder (<dataset>/<run>.json)")
    return parser


def _grid_configs(args, settings=None) -> list:
    """The configs ``grid`` trains: this shard's, at ``--precision`` where
    given, only the checkpointed ones with ``--checkpointed-only``."""
    checkpointed_only = getattr(args, "checkpointed_only", False)
    if not (args.precision or checkpointed_only):
        return [config for _, config in _grid_items(args)]
    rows = [row for _, row in _grid_rows(args, settings)]
    if checkpointed_only:
        rows = [row for row in rows if row["status"] == "checkpointed"]
    return [row["config"] for row in rows]


def _grid_items(args) -> list[tuple]:
    """``(grid key, config)`` of the grid's runs that this shard takes, at
    their own precision (``_grid_rows`` applies ``--precision``)."""
    fn = GRIDS[args.name]
    accepted = inspect.signature(fn).parameters
    kwargs = {}
    if args.seeds:
        kwargs["seeds"] = tuple(args.seeds)
    if args.datasets:
        kwargs["datasets"] = tuple(args.datasets)
    if args.methods:
        if "methods" not in accepted:
            raise UsageError(f"grid {args.name!r} does not take --methods")
        kwargs["methods"] = tuple(args.methods)
    if args.networks:
        if "networks" not in accepted:
            raise UsageError(f"grid {args.name!r} does not take --networks")
        kwargs["networks"] = tuple(args.networks)
    shard, n_shards = _parse_shard(args.shard)
    overrides = _data_overrides(args)
    items = [(key, c.replace(**overrides) if overrides else c) for key, c in fn(args.profile, **kwargs).items()]
    return items[shard::n_shards]


def _grid_rows(args, settings=None) -> list[tuple]:
    """``(grid key, grid_progress row)`` of this shard's runs, with
    ``--precision`` as ``runs.grid_progress_at`` moves them."""
    items = _grid_items(args)
    configs = [config for _, config in items]
    rows = grid_progress_at(configs, args.precision, settings) if args.precision else grid_progress(configs, settings)
    return [(key, row) for (key, _), row in zip(items, rows)]


def _print_plan(keys, rows: list[dict], settings) -> None:
    """``grid --plan``: ``report.budget.plan_lines`` of the grid, priced
    from every stored run and the bf16 speed-ups measured in ``benchmarks/``,
    by proxy (an epoch's matmul work) where a run's own group has nothing stored."""
    from .report.budget import plan_lines, run_prices, work_prices
    from .report.performance import latest_bf16_speedups
    stored_runs = [result_from_record(path, record) for path, record in served_records(settings.results_dir)[0].items()
                   if not is_ensemble(record)]
    benchmarks = Path(__file__).resolve().parent.parent / "benchmarks"
    pairs = [(result.config, result) for result in stored_runs]
    prices = run_prices(pairs, latest_bf16_speedups(sorted(benchmarks.glob("measured-*.txt"))))
    print("\n".join(plan_lines(keys, rows, prices, work_prices(pairs))))


def _run_command(args, settings) -> int:
    """``run``: train one config (or serve it from the store) and print its test metrics."""
    config = profile_config(args.profile, args.dataset, args.method, seed=args.seed, encoder=args.encoder,
                            **_data_overrides(args), **_parse_sets(args.set))
    result = None if args.force else stored(config, settings)
    if result is None:
        resolve_device(args.device)   # a device this machine lacks is an error before any work
    if result is None and args.ddp is not None:
        result = launch(config, args.ddp, device=args.device, settings=settings, threads=args.threads)
        if result is None:
            return 0  # a torchrun rank other than 0: rank 0 stores and reports
    elif result is None:
        result = execute(config, device=args.device, settings=settings)
    print(f"{result.path.name}: test {json.dumps(result.test_metrics)}")
    return 0


def _grid_plan_command(args, settings) -> int:
    """``grid --plan``: what of a grid is stored, checkpointed or not started, and its price."""
    rows = _grid_rows(args, settings)
    _print_plan([key for key, _ in rows], [row for _, row in rows], settings)
    return 0


def _grid_command(args, settings) -> int:
    """``grid``: train a grid's missing runs, here or on a Ray cluster."""
    if args.address is not None and args.executor != "ray":
        raise UsageError("--address is the Ray cluster of --executor ray")
    if args.executor == "ray":
        import_ray()  # where Ray is missing, a one-line error before any work
        outcome = run_grid_ray(_grid_configs(args, settings), device=args.device, threads=args.threads,
                               address=args.address, settings=settings)
    else:
        results = run_grid(_grid_configs(args, settings), device=args.device, settings=settings)
        outcome = GridOutcome(results={label: r for label, r in results.items() if r is not None},
                              failures=[Failure(str(label), "being trained by another process (skipped)")
                                        for label, r in results.items() if r is None])
    for label, result in outcome.results.items():
        print(f"{result.path.name}: test NDCG@10 {result.test_metrics['NDCG@10']:.4f}")
    for failure in outcome.failures:
        print(f"emkd_lib: error: {failure.run} failed: {failure.error}", file=sys.stderr)
    return 1 if outcome.failures else 0


def _analyse_command(args, settings) -> int:
    """``analyse``: add the analysis arrays (embeddings, clusters) to a stored run, from its saved weights."""
    config = profile_config(args.profile, args.dataset, args.method, seed=args.seed, encoder=args.encoder,
                            **_data_overrides(args), **_parse_sets(args.set))
    result = add_analysis(config, settings)
    names = sorted(n for n in result.ranks() if n.startswith("analysis_"))
    print(f"{result.path.name}: {', '.join(names) if names else 'its method stores no analysis arrays'}")
    return 0


def _ensemble_command(args, settings) -> int:
    """``ensemble``: evaluate stored runs of several seeds as one ensemble."""
    members = [profile_config(args.profile, args.dataset, args.method, seed=s) for s in args.seeds]
    result = ensemble_run_or_load(members, device=args.device, settings=settings)
    print(f"{result.path.name}: test NDCG@10 {result.test_metrics['NDCG@10']:.4f}")
    return 0


def _data_command(args, settings) -> int:
    """``data add``: register a user's dataset in a data folder's registry.json."""
    registry_dir = args.data_dir or settings.data_dir
    if registry_dir is None:
        raise UsageError("data add needs --data-dir or EMKD_DATA_DIR: the folder whose registry.json "
                         "will hold the dataset")
    spec = register_dataset(args.name, args.sequences, args.attributes, registry_dir, args.like)
    print(f"registered dataset {spec.name!r} ({spec.folder}/{spec.sequence_file}) in {registry_dir}/registry.json")
    return 0


def _list_command(args, settings) -> int:
    """``list``: every stored result, with the problems of the unreadable ones."""
    good, problems = served_records(settings.results_dir)
    for path, record in good.items():
        name = path.relative_to(settings.results_dir)
        if is_ensemble(record):
            print(f"{name}: test NDCG@10 {record['test_metrics']['NDCG@10']:.4f}")
            continue
        r = result_from_record(path, record)
        flags = "".join(f" [{f}]" for f in ("dirty", "below_popularity") if r.flags.get(f))
        print(f"{name}: valid NDCG@10 {r.valid_metrics['NDCG@10']:.4f} "
              f"test NDCG@10 {r.test_metrics['NDCG@10']:.4f} ({r.train_seconds:.0f}s){flags}")
    for problem in problems:
        print(f"unreadable: {problem}")
    return 0


def _compare_command(args, settings) -> int:
    """``compare``: which runs two stores hold bit-identically."""
    rows, only, unreadable = compare_stores(*args.stores)
    for row in rows:
        verdict = "bit-identical" if row["identical"] else "DIFFERS in " + ", ".join(row["different arrays"])
        print(f"{row['run']}: {verdict}; test NDCG@10 {row['test NDCG@10 (a)']!r} and {row['test NDCG@10 (b)']!r}")
    for line in [*only, *(f"unreadable: {problem}" for problem in unreadable)]:
        print(line)
    same = sum(row["identical"] for row in rows)
    print(f"{same} of {len(rows)} runs stored in both are bit-identical")
    return 0 if rows and same == len(rows) and not unreadable else 1


def _grid_or_plan_command(args, settings) -> int:
    return (_grid_plan_command if args.plan else _grid_command)(args, settings)


# One function per subcommand.
COMMANDS = {"run": _run_command, "grid": _grid_or_plan_command, "analyse": _analyse_command,
            "ensemble": _ensemble_command, "data": _data_command, "list": _list_command,
            "compare": _compare_command}


def _command(args) -> int:
    return COMMANDS[args.command](args, settings_module.current())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        configure_process(args.threads, settings_module.current().keep_freed_memory)
        code_commit()  # read once, now: the code this process runs, whatever is committed while it trains
        return _command(args)
    except (UsageError, ValueError, KeyError, TypeError, FileNotFoundError, NotADirectoryError, StoreError,
            MissingExtra) as err:
        if args.debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"emkd_lib: error: {' '.join(str(message).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
