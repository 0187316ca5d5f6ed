"""SASRec training speed: the library against RecBole 1.2.1, side by side.

Both train SASRec with full-softmax cross entropy on the same Beauty file
with the same width, depth, heads, window length, batch size and threads,
in one run of this script; it prints both in **training target positions
per second** and the ratio. Work, not epochs, is compared: RecBole cuts every
prefix of a user's training sequence into its own example and predicts its
last item only (one target per example), the library predicts the next item
at every position of a window (one target per non-padding position).

RecBole needs numpy<2, pandas<2.3 and setuptools<81, so it runs in its own
virtual environment, in a child process of this script:

    python3 -m venv ~/.cache/emkd-book/recbole-venv
    ~/.cache/emkd-book/recbole-venv/bin/pip install "recbole==1.2.1" "numpy<2" "pandas<2.3" \\
        "setuptools<81" scipy colorlog colorama scikit-learn pyyaml tqdm tabulate texttable thop \\
        tensorboard plotly --no-deps
    # torch from the project's venv (same build on both sides), appended after RecBole's own packages:
    echo "$PWD/.venv/lib/python3.11/site-packages" > \\
        ~/.cache/emkd-book/recbole-venv/lib/python3.11/site-packages/zz_project_torch.pth
    python benchmarks/recbole_peer.py --batches 30 --threads 1

RecBole's side imports its config, data, model and trainer modules only (its
``quick_start`` imports ``ray.tune``) and runs its own ``calculate_loss``,
backward, gradient clipping and optimizer step on its own data loader's
batches: the body of ``Trainer._train_epoch``, without the progress bar.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_VENV = Path.home() / ".cache" / "emkd-book" / "recbole-venv"


def write_atomic_inter(sequences, path: Path) -> None:
    """RecBole's atomic ``.inter`` file: one (user, item, timestamp) row per
    interaction, the position in the sequence as its timestamp."""
    with open(path, "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, seq in enumerate(sequences, start=1):
            for t, item in enumerate(seq):
                f.write(f"{user}\t{int(item)}\t{t}\n")


def recbole_side(args) -> dict:
    """Runs in RecBole's venv: its SASRec on its own batches of the .inter file."""
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    torch.set_num_threads(args.threads)
    config = Config(model="SASRec", dataset="beauty", config_dict={
        "data_path": args.data_path, "checkpoint_dir": os.path.join(args.data_path, "saved"),
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": args.max_len, "hidden_size": args.hidden, "inner_size": 4 * args.hidden,
        "n_layers": args.n_blocks, "n_heads": args.n_heads, "hidden_dropout_prob": args.dropout,
        "attn_dropout_prob": args.dropout, "loss_type": "CE", "train_neg_sample_args": None,
        "train_batch_size": args.batch_size, "learning_rate": 1e-3, "epochs": 1,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
        "device": "cpu", "use_gpu": False, "seed": 0, "reproducibility": True, "show_progress": False,
        "log_wandb": False, "worker": 0, "clip_grad_norm": {"max_norm": 5.0, "norm_type": 2}})
    init_seed(0, True)
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    model = SASRec(config, train_data.dataset).to("cpu")
    trainer = Trainer(config, model)
    model.train()
    seconds, targets, examples = 0.0, 0, 0
    for i, interaction in enumerate(train_data):
        if i > args.batches:
            break
        t0 = time.perf_counter()
        trainer.optimizer.zero_grad()
        loss = model.calculate_loss(interaction)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        trainer.optimizer.step()
        if i:                                           # batch 0 warms up
            seconds += time.perf_counter() - t0
            targets += len(interaction)                 # one target (the last item) per example
            examples += len(interaction)
    return {"side": "recbole", "seconds": seconds, "targets": targets, "examples": examples,
            "epoch_examples": len(train_data.dataset), "torch": torch.__version__}


def library_side(args, sequences) -> dict:
    """The library's SASRec (cpu profile, the given width etc.) on its own length-bucketed batches."""
    import numpy as np
    import torch

    from emkd_lib.batching import length_bucketed_batches, pad_left
    from emkd_lib.methods import build_method
    from emkd_lib.process import configure_process
    from emkd_lib.profiles import profile_config
    from emkd_lib.runs import run_data

    configure_process(args.threads, keep_freed_memory=True)
    config = profile_config("cpu", "beauty", "sasrec").replace(
        encoder_config__hidden=args.hidden, encoder_config__n_blocks=args.n_blocks,
        encoder_config__n_heads=args.n_heads, encoder_config__dropout=args.dropout,
        data__max_len=args.max_len + 1, train__batch_size=args.batch_size)   # windows of T inputs + 1 target
    dataset, split = run_data(config)
    torch.manual_seed(0)
    model, recipe = build_method(config, dataset)
    examples = recipe.make_examples(split.train)
    lengths = np.array([len(e) for e in examples])
    order = length_bucketed_batches(lengths, args.batch_size, shuffle=True, rng=np.random.default_rng(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    generator = torch.Generator().manual_seed(0)
    model.train()
    seconds, targets, n_examples = 0.0, 0, 0
    for i, idx in enumerate(order[:args.batches + 1]):
        batch = torch.as_tensor(pad_left([examples[j] for j in idx], config.data.max_len))
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        recipe.loss(model, batch, generator)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        if i:
            seconds += time.perf_counter() - t0
            targets += int((batch[:, 1:] > 0).sum())       # every position with a next item
            n_examples += len(idx)
    return {"side": "library", "seconds": seconds, "targets": targets, "examples": n_examples,
            "epoch_examples": len(examples), "torch": torch.__version__}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=30, help="timed batches per side (after one warm-up)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--n-blocks", type=int, default=2)
    parser.add_argument("--n-heads", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--max-len", type=int, default=14, help="input items per example (RecBole's MAX_ITEM_LIST_LENGTH)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="RecBole's virtual environment")
    parser.add_argument("--recbole-side", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-path", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.recbole_side:
        print(json.dumps(recbole_side(args)))
        return {}
    import torch

    from emkd_lib.data import load_dataset
    from emkd_lib.store import machine_name

    torch.set_num_threads(args.threads)
    python = args.venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"recbole_peer: no RecBole venv at {args.venv} (see this script's docstring)")
    dataset = load_dataset("beauty")
    # RecBole's leave-one-out split of the whole sequences gives the same training part as ours
    sequences = dataset.sequences
    print(f"SASRec, library against RecBole 1.2.1, on {machine_name(torch.device('cpu'))}; "
          f"beauty, d={args.hidden}, {args.n_blocks} blocks, {args.n_heads} head(s), {args.max_len} input items, "
          f"batch {args.batch_size}, {args.batches} timed batches per side")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "beauty").mkdir()
        write_atomic_inter(sequences, Path(tmp) / "beauty" / "beauty.inter")
        forwarded = list(argv if argv is not None else sys.argv[1:])
        done = subprocess.run([str(python), __file__, *forwarded, "--recbole-side", "--data-path", tmp],
                              capture_output=True, text=True, cwd=tmp)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise SystemExit(f"recbole_peer: RecBole's side failed (exit {done.returncode}): {last}")
        recbole = json.loads(done.stdout.strip().splitlines()[-1])
    library = library_side(args, sequences)
    for label, r in (("library", library), ("RecBole 1.2.1", recbole)):
        print(f"  {label:14s} {r['targets'] / r['seconds']:9.0f} target positions/s "
              f"({r['examples'] / r['seconds']:7.0f} examples/s; {r['targets'] / max(r['examples'], 1):.1f} targets "
              f"per example; {r['epoch_examples']} examples an epoch)")
    ratio = (library["targets"] / library["seconds"]) / (recbole["targets"] / recbole["seconds"])
    print(f"  library / RecBole, target positions per second: {ratio:.2f}x")
    return {"library": library, "recbole": recbole, "ratio": ratio}


if __name__ == "__main__":
    main()
