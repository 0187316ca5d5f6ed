"""The one training loop shared by every method.

Adam, optional gradient clipping, length-bucketed batches, validation
NDCG@10 after every epoch, early stopping that counts evaluations only after
a minimum number of optimizer steps, the test split evaluated once with the
weights of the best validation epoch, every loss term logged per epoch, and
a checkpoint after every epoch from which an interrupted run resumes to the
bit-identical result of an uninterrupted one.

The same loop trains one model over several processes when ``fit`` is given
a ``parallel`` (``distributed.DataParallel``): the few places where that
differs call it, and without it nothing else changes.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import pickle
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .batching import pad_left, training_batches
from .config import TrainConfig
from .data import LeaveOneOutSplit
from .evaluation import evaluate, metrics_from_ranks
from .files import atomic_write
from .methods import Recipe
from .parameters import DEVICE_NAMES

SELECTION_METRIC = "NDCG@10"


def seed_everything(seed: int, device: torch.device | None = None) -> None:
    """Seed every generator a run draws from: Python, NumPy's global one and
    torch's (CPU and every CUDA device), and make cuDNN pick deterministic
    kernels. Called before the model is built, so initial weights are the
    seed's too.

    On ``device`` CUDA it also asks for PyTorch's deterministic kernels: the
    embedding backward and ``index_add_`` otherwise accumulate with atomics in
    whatever order the threads arrive, so two runs of one seed differ in the
    last bits and then in their ranks. cuBLAS needs its fixed workspace for
    that, set before its first use (a kernel with no deterministic version
    warns rather than stops the run)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    if device is not None and torch.device(device).type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` picks CUDA when present, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device {device!r}: expected {DEVICE_NAMES}") from None
    if resolved.type == "cuda" and (not torch.cuda.is_available()
                                    or (resolved.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device {device!r}: this machine's torch sees {torch.cuda.device_count()} CUDA devices "
                         f"(use cpu or auto)")
    return resolved


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # per epoch: loss terms, valid NDCG@10, seconds, steps
    best_epoch: int = -1
    valid_metrics: dict = field(default_factory=dict)
    test_metrics: dict = field(default_factory=dict)
    valid_ranks: np.ndarray | None = None
    test_ranks: np.ndarray | None = None
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    examples_per_epoch: int = 0
    steps: int = 0
    stopped_by: str = ""          # "patience" or "epoch cap"
    resumed_from_epoch: int = 0   # 0: trained from the start


def with_precision(recipe: Recipe, precision: str, device: torch.device) -> Recipe:
    """``recipe`` whose loss runs its forward pass under ``precision``
    ("fp32": unchanged; "bf16": ``torch.autocast`` with bfloat16, the terms
    returned in fp32, the backward outside the context as autocast asks)."""
    if precision == "fp32":
        return recipe
    if precision != "bf16":
        raise ValueError(f"unknown precision {precision!r}; known: fp32, bf16")
    loss = recipe.loss

    def bf16_loss(model, ids, generator):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            terms = loss(model, ids, generator)
        return {name: value.float() for name, value in terms.items()}

    return dataclasses.replace(recipe, loss=bf16_loss)


def train_step(model: nn.Module, recipe: Recipe, ids: torch.Tensor, optimizer: torch.optim.Optimizer,
               grad_clip: float | None, generator: torch.Generator, loss_scale: float = 1.0
               ) -> dict[str, torch.Tensor]:
    """One optimizer step on a padded batch; returns the loss terms (on the graph's device).
    ``loss_scale`` multiplies the loss that is differentiated (data-parallel
    ranks weigh their share of a batch with it), not the terms returned."""
    terms = recipe.loss(model, ids, generator)
    optimizer.zero_grad(set_to_none=True)
    (terms["loss"] if loss_scale == 1.0 else terms["loss"] * loss_scale).backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return terms


def train_one_epoch(model: nn.Module, recipe: Recipe, examples: list[np.ndarray],
                    optimizer: torch.optim.Optimizer, settings: TrainConfig,
                    rng: np.random.Generator, generator: torch.Generator,
                    device: torch.device, progress: bool = False, parallel=None) -> tuple[dict[str, float], int]:
    """One pass over ``examples``; returns the mean of every loss term over
    batches and the number of optimizer steps. With ``parallel`` this process
    trains its share of every batch and the terms are those of whole batches."""
    model.train()
    lengths = np.fromiter((len(e) for e in examples), dtype=np.int64, count=len(examples))
    batches = training_batches(lengths, settings.batch_size, settings.batch_order, rng)
    totals: dict[str, torch.Tensor] = {}
    for idx in tqdm(batches, desc="batches", leave=False, disable=not progress):
        if parallel is None:
            ids = torch.from_numpy(pad_left([examples[i] for i in idx])).to(device)
            terms = train_step(model, recipe, ids, optimizer, settings.grad_clip, generator)
        else:
            terms = parallel.train_step([examples[i] for i in idx], optimizer, settings.grad_clip, generator)
        # Summed on the device: one host sync per epoch, not one per term and step.
        for name, value in terms.items():
            value = value.detach()
            totals[name] = totals[name] + value if name in totals else value
    if parallel is not None:
        totals = parallel.sum_over_ranks(totals)
    n = max(len(batches), 1)
    return {name: float(total) / n for name, total in totals.items()}, len(batches)


def _rng_state(rng: np.random.Generator, generator: torch.Generator) -> dict:
    state = {"python": random.getstate(), "numpy_global": np.random.get_state(),
             "numpy_rng": rng.bit_generator.state, "torch_cpu": torch.get_rng_state(),
             "generator": generator.get_state()}
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, rng: np.random.Generator, generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy_global"])
    rng.bit_generator.state = state["numpy_rng"]
    torch.set_rng_state(state["torch_cpu"])
    generator.set_state(state["generator"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])


# The ``FitResult`` fields a checkpoint carries, and everything it holds.
_RESUMED_FIELDS = ("history", "best_epoch", "valid_ranks", "train_seconds", "eval_seconds", "steps")
_CHECKPOINT_KEYS = ("epoch", "stopped", "model", "optimizer", "rng", "best_score", "best_state", "since_best",
                    *_RESUMED_FIELDS)
_CHECKPOINT_REMEDY = "delete it to train the run from its first epoch"


def read_checkpoint(checkpoint: str | Path, map_location="cpu", mmap: bool = False,
                    keys: tuple[str, ...] = _CHECKPOINT_KEYS) -> dict:
    """A ``fit`` checkpoint; a truncated, corrupt or foreign file is one error
    that names it and says what to do."""
    try:
        state = torch.load(checkpoint, map_location=map_location, weights_only=False, mmap=mmap)
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError, RuntimeError) as err:
        # What a damaged or foreign file raises; an OSError or running out of
        # memory says nothing about the file, and must not advise deleting it.
        if isinstance(err, torch.cuda.OutOfMemoryError):
            raise
        reason = " ".join(str(err).split())
        raise ValueError(f"checkpoint {checkpoint} is unreadable ({type(err).__name__}: {reason}); "
                         f"{_CHECKPOINT_REMEDY}") from None
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"checkpoint {checkpoint} is not a training checkpoint (no {missing[0]!r}); "
                         f"{_CHECKPOINT_REMEDY}")
    return state


def checkpoint_summary(checkpoint: str | Path) -> dict:
    """How far the run of a ``fit`` checkpoint has come: its last epoch, its
    best epoch and validation NDCG@10 so far, its training + evaluation
    seconds, and whether it has stopped. Memory-mapped: the weights are not read."""
    state = read_checkpoint(checkpoint, mmap=True, keys=("epoch", "best_epoch", "best_score", "train_seconds",
                                                          "eval_seconds", "stopped"))
    return {"epoch": state["epoch"], "best_epoch": state["best_epoch"], "best_valid_ndcg10": state["best_score"],
            "seconds": state["train_seconds"] + state["eval_seconds"], "stopped": state["stopped"]}


def fit(model: nn.Module, recipe: Recipe, split: LeaveOneOutSplit, settings: TrainConfig, seed: int,
        device: str | torch.device | None = None, progress: bool = True, checkpoint: Path | None = None,
        exclude_history: bool = True, stop_after_epoch: int | None = None, parallel=None,
        epoch_stamp: dict | None = None) -> FitResult:
    """Train with early stopping on validation NDCG@10 and test the best epoch.

    The caller seeds (``seed_everything``) before building ``model``; ``seed``
    here seeds the batch order and the masks. With ``checkpoint`` a file is
    written atomically after every epoch (weights, optimizer, every RNG state,
    history, early-stopping state) and, if present at the start, training
    resumes from it. ``stop_after_epoch`` ends the process's training early
    with the checkpoint in place, as a kill would (tests use it).
    ``epoch_stamp`` is added to each epoch's history row (the caller's code
    commit and machine: a run resumed by other code, or on another machine,
    says which epochs each trained).

    With ``parallel`` this process is one rank of a data-parallel run
    (``distributed``): every rank trains its share of each batch; rank 0
    alone evaluates, decides when to stop, writes the checkpoint (with every
    rank's generators) and tests, and the other ranks return a result
    without metrics.
    """
    device = resolve_device(device)
    main = parallel is None or parallel.is_main
    rng = np.random.default_rng(seed)  # the batch order: the same on every rank
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if parallel is None else parallel.seed_streams(seed))
    model.to(device)
    # The fused kernel updates all parameters in one pass; on two CPU cores the
    # per-tensor Adam was a sizeable share of a step.
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay,
                                 fused=device.type in ("cpu", "cuda"))
    examples = recipe.make_examples(split.train)
    result = FitResult(examples_per_epoch=len(examples))
    scored = recipe                                    # evaluation stays fp32
    recipe = with_precision(recipe, settings.precision, device)

    def ranks_on(inputs, targets):
        model.eval()
        return evaluate(lambda ids: scored.score(model, ids), inputs, targets, max_len=scored.eval_max_len,
                        device=device, exclude_history=exclude_history)

    best_score, best_state, since_best, start, stopped = -1.0, None, 0, 1, False
    state = None
    if checkpoint is not None and main and Path(checkpoint).exists():
        state = read_checkpoint(checkpoint, map_location=device if parallel is None else "cpu")
    if parallel is not None:
        # Rank 0's checkpoint, sent through the process group (from the CPU):
        # the ranks need not share the checkpoint's filesystem.
        state = parallel.from_main(state)
    if state is not None:
        if state["epoch"] > settings.epochs:
            raise ValueError(f"checkpoint {checkpoint} has trained {state['epoch']} epochs, past this run's cap "
                             f"of {settings.epochs}; {_CHECKPOINT_REMEDY}")
        try:
            model.load_state_dict(state["model"])
        except RuntimeError:   # torch's message lists every mismatched tensor
            raise ValueError(f"checkpoint {checkpoint} holds another model's weights; {_CHECKPOINT_REMEDY}") from None
        optimizer.load_state_dict(state["optimizer"])
        try:
            _set_rng_state(state["rng"] if parallel is None else state["rank_rng"][parallel.rank], rng, generator)
        except RuntimeError:   # torch's message gives only the state's size
            raise ValueError(f"checkpoint {checkpoint} holds the random state of a run on another kind of device "
                             f"(CPU or CUDA) than {device.type}; {_CHECKPOINT_REMEDY}") from None
        best_score, best_state, since_best = state["best_score"], state["best_state"], state["since_best"]
        for name in _RESUMED_FIELDS:
            setattr(result, name, state[name])
        start = result.resumed_from_epoch = state["epoch"] + 1
        stopped = state["stopped"]  # killed after its stopping epoch was written: nothing left to train
        if stopped:
            start = settings.epochs + 1
    if parallel is not None:
        parallel.wrap(model, recipe)

    result.stopped_by = "patience" if stopped else "epoch cap"
    bar = tqdm(range(start, settings.epochs + 1), desc="epochs", disable=not progress,
               initial=start - 1, total=settings.epochs)
    for epoch in bar:
        if recipe.on_epoch_start is not None:
            recipe.on_epoch_start(epoch)
        t0 = time.perf_counter()
        terms, steps = train_one_epoch(model, recipe, examples, optimizer, settings, rng, generator, device,
                                       parallel=parallel)
        t1 = time.perf_counter()
        result.steps += steps
        result.train_seconds += t1 - t0
        stop = False
        if main:
            valid_ranks = ranks_on(split.valid_inputs, split.valid_targets)
            t2 = time.perf_counter()
            result.eval_seconds += t2 - t1
            score = metrics_from_ranks(valid_ranks)[SELECTION_METRIC]
            result.history.append({"epoch": epoch, **terms, "valid_ndcg10": score, "steps": result.steps,
                                   "train_seconds": t1 - t0, "eval_seconds": t2 - t1,
                                   "wall_seconds": result.train_seconds + result.eval_seconds,
                                   **(epoch_stamp or {})})
            bar.set_postfix(loss=f"{terms['loss']:.4f}", ndcg10=f"{score:.4f}")
            if score > best_score:
                best_score, since_best = score, 0
                best_state = copy.deepcopy(model.state_dict())
                result.best_epoch, result.valid_ranks = epoch, valid_ranks
            elif result.steps >= settings.min_steps:
                since_best += 1
                stop = since_best >= settings.patience
        if parallel is not None:
            stop = parallel.from_main(stop)
        if checkpoint is not None:
            # Every rank's generators, gathered by all of them, for a data-parallel resume.
            rank_rng = None if parallel is None else parallel.gather(_rng_state(rng, generator))
            if main:
                state = {"epoch": epoch, "stopped": stop, "model": model.state_dict(),
                         "optimizer": optimizer.state_dict(), "rng": _rng_state(rng, generator),
                         "best_score": best_score, "best_state": best_state, "since_best": since_best,
                         **{name: getattr(result, name) for name in _RESUMED_FIELDS}}
                if rank_rng is not None:
                    state["rank_rng"] = rank_rng
                atomic_write(checkpoint, lambda f: torch.save(state, f))
        if stop:
            result.stopped_by = "patience"
            break
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            if parallel is not None:
                parallel.barrier()  # rank 0 has written the checkpoint: now the ranks stop
            raise InterruptedError(f"stopped after epoch {epoch} on request; resume from {checkpoint}")
    if not main:
        return result  # rank 0 tests the best epoch's weights
    model.load_state_dict(best_state)
    t0 = time.perf_counter()
    result.test_ranks = ranks_on(split.test_inputs, split.test_targets)
    result.eval_seconds += time.perf_counter() - t0
    result.valid_metrics = metrics_from_ranks(result.valid_ranks)
    result.test_metrics = metrics_from_ranks(result.test_ranks)
    return result
