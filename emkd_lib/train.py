"""The one training loop shared by every method.

Adam, optional gradient clipping, length-bucketed batches, validation NDCG@10
after every epoch, patience-based early stopping, and the test split evaluated
once, with the weights of the best validation epoch.
"""
from __future__ import annotations

import copy
import ctypes
import os
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .batching import length_bucketed_batches, pad_left
from .data import LeaveOneOutSplit
from .evaluation import evaluate, metrics_from_ranks
from .methods import Recipe

SELECTION_METRIC = "NDCG@10"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` picks CUDA when present, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def keep_freed_cpu_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse; returns whether it could.

    A training step allocates and frees tensors of hundreds of MB (scores over
    the catalogue, their softmax, their gradients). By default glibc serves each
    with a fresh ``mmap`` and unmaps it when freed, so the next step faults in
    and zeroes the same pages again: on the 2-core machine, training processes
    spent 35 to 60% of their CPU time in the kernel doing this. With ``mmap``
    off and trimming off, freed blocks stay in the heap and the next step
    reuses them. The cost is memory: a process keeps its peak until it exits,
    and the heap fragments (Beauty/ML-1M runs peaked at about twice their
    default footprint), so ``EMKD_KEEP_FREED_MEMORY=0`` in the environment
    leaves malloc as it is for runs that would not fit. A no-op (``False``)
    there and where the C library is not glibc.
    """
    if os.environ.get("EMKD_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: other mallocs read mallopt differently
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


@dataclass
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    grad_clip: float | None = None
    patience: int = 5
    eval_batch_size: int = 1024
    seed: int = 0


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # per epoch: loss, valid NDCG@10, seconds
    best_epoch: int = -1
    valid_metrics: dict = field(default_factory=dict)
    test_metrics: dict = field(default_factory=dict)
    valid_ranks: np.ndarray | None = None
    test_ranks: np.ndarray | None = None
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    examples_per_epoch: int = 0


def train_one_epoch(model: nn.Module, recipe: Recipe, examples: list[np.ndarray],
                    optimizer: torch.optim.Optimizer, settings: TrainSettings,
                    rng: np.random.Generator, generator: torch.Generator,
                    device: torch.device, progress: bool = False) -> float:
    """One pass over ``examples``; returns the mean batch loss."""
    model.train()
    lengths = np.fromiter((len(e) for e in examples), dtype=np.int64, count=len(examples))
    batches = length_bucketed_batches(lengths, settings.batch_size, shuffle=True, rng=rng)
    total = 0.0
    for idx in tqdm(batches, desc="batches", leave=False, disable=not progress):
        ids = torch.from_numpy(pad_left([examples[i] for i in idx])).to(device)
        loss = recipe.loss(model, ids, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        total += loss.item()
    return total / max(len(batches), 1)


def fit(model: nn.Module, recipe: Recipe, split: LeaveOneOutSplit, settings: TrainSettings,
        device: str | torch.device | None = None, progress: bool = True) -> FitResult:
    """Train with early stopping on validation NDCG@10 and test the best epoch."""
    device = resolve_device(device)
    keep_freed_cpu_memory()
    seed_everything(settings.seed)
    rng = np.random.default_rng(settings.seed)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    model.to(device)
    # The fused kernel updates all parameters in one pass; on two CPU cores the
    # per-tensor Adam was a sizeable share of a step.
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay,
                                 fused=device.type in ("cpu", "cuda"))
    examples = recipe.make_examples(split.train)
    result = FitResult(examples_per_epoch=len(examples))

    def ranks_on(inputs, targets):
        model.eval()
        return evaluate(lambda ids: recipe.score(model, ids), inputs, targets,
                        max_len=recipe.eval_max_len, batch_size=settings.eval_batch_size, device=device)

    best_score, best_state, since_best = -1.0, None, 0
    bar = tqdm(range(1, settings.epochs + 1), desc="epochs", disable=not progress)
    for epoch in bar:
        t0 = time.perf_counter()
        loss = train_one_epoch(model, recipe, examples, optimizer, settings, rng, generator, device)
        t1 = time.perf_counter()
        valid_ranks = ranks_on(split.valid_inputs, split.valid_targets)
        t2 = time.perf_counter()
        result.train_seconds += t1 - t0
        result.eval_seconds += t2 - t1
        score = metrics_from_ranks(valid_ranks)[SELECTION_METRIC]
        result.history.append({"epoch": epoch, "loss": loss, "valid_ndcg10": score,
                               "train_seconds": t1 - t0, "eval_seconds": t2 - t1,
                               "wall_seconds": result.train_seconds + result.eval_seconds})
        bar.set_postfix(loss=f"{loss:.4f}", ndcg10=f"{score:.4f}")
        if score > best_score:
            best_score, since_best = score, 0
            best_state = copy.deepcopy(model.state_dict())
            result.best_epoch, result.valid_ranks = epoch, valid_ranks
        else:
            since_best += 1
            if since_best >= settings.patience:
                break
    model.load_state_dict(best_state)
    t0 = time.perf_counter()
    result.test_ranks = ranks_on(split.test_inputs, split.test_targets)
    result.eval_seconds += time.perf_counter() - t0
    result.valid_metrics = metrics_from_ranks(result.valid_ranks)
    result.test_metrics = metrics_from_ranks(result.test_ranks)
    return result
