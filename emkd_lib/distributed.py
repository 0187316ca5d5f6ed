"""One model trained over several processes with DistributedDataParallel.

``python -m emkd_lib run ... --ddp N`` spawns N processes on this machine
(or, under ``torchrun``, each process it starts is one of them); backend
NCCL on CUDA (rank r on ``cuda:r``), gloo on the CPU. Every rank runs
``runs.execute``, and through it the one training loop (``train.fit``),
with a :class:`DataParallel` that changes only what must change:

- Every rank seeds as ``execute`` does before building the model, so the
  initial weights match (DDP's broadcast from rank 0 then changes nothing).
- Every rank draws the same global batch order (``fit``'s batch-order
  generator is seeded alike) and trains rows ``rank, rank + N, ...`` of each
  global batch of ``train.batch_size`` examples, which must be divisible by N:
  ``batch_size / N`` rows each, one row fewer for some ranks in a short batch.
  A rank left with no row (a batch shorter than N) trains a stand-in row
  that weighs nothing, so that it still takes part in the gradient all-reduce.
- A rank pads its rows to the width of the whole batch, so that every row is
  computed as in one process.
- The loss: a method's loss is a mean over its rank's share of the batch, and
  DDP averages gradients over ranks; that is the mean over the whole batch
  only for equal shares. So rank r multiplies its loss by
  ``N * units_r / units``, where units are what the loss averages over
  (``Recipe.loss_units``: loss-carrying positions for the next-item baselines,
  rows when they weigh windows equally; rows where a method does not say), and the averaged gradient is the
  gradient of the whole batch's mean, whatever the shares. The logged terms
  are summed over ranks with the same weights.
- Draws inside a step (masks, augmentations, dropout): rank 0 draws from the
  streams of a single-process run, rank r > 0 from streams seeded by
  ``(seed, r)``, so that two shards never share their masks.
- Rank 0 alone evaluates, decides when to stop (sent to the others), writes
  the checkpoint (with every rank's generators, ``<key>.ddpN.pt``), tests and
  stores the result.

So for a deterministic objective that is a mean of independent per-row or
per-position terms (SASRec, GRU4Rec, Caser without dropout) N processes give
the parameters of one process up to floating-point rounding (tested, N = 2).
Where the objective couples the rows of a batch (in-batch negatives: EMKD's
ICL/CCL, CL4SRec, DuoRec, ICLRec), each rank sees only its shard's, and
random draws differ from one process's: a DDP run is then a run of the same
config, not the same bits. Its record keeps the run key (the config is the
same) and says ``ddp_world_size`` in its provenance.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import socket
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import settings as settings_module
from .batching import pad_left
from .config import RunConfig
from .methods import Recipe
from .process import configure_process
from .store import RunResult, load_result
from .train import resolve_device, seed_everything, train_step

# The other ranks wait in a collective while rank 0 evaluates an epoch; a
# validation pass over a large dataset can outlast torch's default timeout.
TIMEOUT = datetime.timedelta(hours=2)


class _LossOf(nn.Module):
    """A recipe's loss as a module's forward: everything a method's loss
    touches (the encoder, its output layer, extra heads, N networks) then runs
    inside DDP's forward, as DDP's gradient hooks expect."""

    def __init__(self, model: nn.Module, loss: Callable):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, ids: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self.loss(self.model, ids, generator)


def _rows(ids: torch.Tensor) -> torch.Tensor:
    return torch.tensor(len(ids))


@dataclass
class DataParallel:
    """This process's part in a data-parallel run: what ``train.fit`` asks of it."""

    rank: int
    world_size: int
    device: torch.device
    _ddp: DistributedDataParallel | None = dataclasses.field(default=None, init=False, repr=False)
    _recipe: Recipe | None = dataclasses.field(default=None, init=False, repr=False)
    _units: Callable = dataclasses.field(default=_rows, init=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def seed_streams(self, seed: int) -> int:
        """The seed of this rank's mask generator; a rank other than 0 also
        reseeds the global generators (dropout), after the model is built."""
        if self.rank == 0:
            return seed
        own = int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0])
        seed_everything(own)
        return own

    def wrap(self, model: nn.Module, recipe: Recipe) -> None:
        """Put ``model`` (already on this rank's device) under DDP."""
        # Every method's loss uses every parameter at every step (checked for
        # each method and encoder), so DDP need not search the graph for
        # unused ones each step (find_unused_parameters); were one left out,
        # DDP would stop with an error at the next step, not train wrongly.
        # Buffers are synced once, here, and not before every forward: every
        # rank builds them alike and updates them from identical weights, and
        # the item-attribute tables are large.
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self._ddp = DistributedDataParallel(_LossOf(model, recipe.loss), device_ids=device_ids,
                                            forward_sync_buffers=False)
        self._recipe = dataclasses.replace(recipe, loss=lambda ddp, ids, generator: ddp(ids, generator))
        self._units = recipe.loss_units or _rows

    def train_step(self, rows: list[np.ndarray], optimizer: torch.optim.Optimizer, grad_clip: float | None,
                   generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One optimizer step on this rank's share of a global batch; returns
        its loss terms weighted by its share, so that their sum over ranks is
        the whole batch's."""
        batch = pad_left(rows)  # the whole batch's width, for this rank's rows too
        mine = batch[self.rank::self.world_size]
        if len(mine):
            share = float(self._units(torch.from_numpy(mine))) / float(self._units(torch.from_numpy(batch)))
        else:  # a batch shorter than the ranks: a row that weighs nothing keeps this rank in the all-reduce
            mine, share = batch[:1], 0.0
        ids = torch.from_numpy(mine).to(self.device)
        terms = train_step(self._ddp, self._recipe, ids, optimizer, grad_clip, generator,
                           loss_scale=self.world_size * share)
        return {name: value.detach() * share for name, value in terms.items()}

    def sum_over_ranks(self, totals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not totals:
            return totals
        stacked = torch.stack([value.to(torch.float64) for value in totals.values()])
        dist.all_reduce(stacked)
        return dict(zip(totals, stacked.unbind()))

    def from_main(self, value):
        """Rank 0's ``value``, on every rank."""
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def barrier(self) -> None:
        dist.barrier()

    def gather(self, value) -> list:
        """Every rank's ``value``, on every rank, in rank order."""
        out = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out


# ---- starting the processes ---------------------------------------------------

def free_port() -> int:
    """A TCP port free now on this machine, for the ranks' rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun() -> tuple[int, int, int] | None:
    """(rank, local rank, world size) when torchrun started this process."""
    if not all(name in os.environ for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE")):
        return None
    return int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])


def check(config: RunConfig, world_size: int, device: torch.device, devices_needed: int) -> None:
    """A clear error, before any process starts, for what cannot run."""
    if world_size < 1:
        raise ValueError(f"--ddp takes a number of processes >= 1, got {world_size}")
    if config.train.batch_size % world_size:
        raise ValueError(f"--ddp {world_size}: train.batch_size {config.train.batch_size} is not divisible by "
                         f"{world_size}; every process takes an equal share of each batch")
    if device.type == "cuda":
        if device.index is not None:
            raise ValueError(f"--ddp puts rank r on cuda:r; give --device cuda, not {device}")
        if torch.cuda.device_count() < devices_needed:
            raise ValueError(f"--ddp {world_size}: needs cuda:0 to cuda:{devices_needed - 1} on this machine, "
                             f"which has {torch.cuda.device_count()} CUDA devices")
    elif device.type != "cpu":
        raise ValueError(f"--ddp trains on cpu or cuda, not {device}")


def _train_rank(rank: int, local_rank: int, world_size: int, init_method: str, config: RunConfig,
                device_type: str, settings, progress: bool, stop_after_epoch: int | None) -> None:
    from .runs import execute
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", init_method=init_method, rank=rank,
                            world_size=world_size, timeout=TIMEOUT)
    try:
        execute(config, device=device, progress=progress and rank == 0, settings=settings,
                stop_after_epoch=stop_after_epoch, parallel=DataParallel(rank, world_size, device))
    finally:
        dist.destroy_process_group()


def _spawned(rank: int, world_size: int, init_method: str, config: RunConfig, device_type: str, settings,
             threads: int | None, progress: bool, stop_after_epoch: int | None) -> None:
    # A spawned process starts bare: the CLI's process settings again.
    configure_process(threads, settings.keep_freed_memory)
    _train_rank(rank, rank, world_size, init_method, config, device_type, settings, progress, stop_after_epoch)


def launch(config: RunConfig, world_size: int, device: str | None = None, settings=None,
           threads: int | None = None, progress: bool = True, stop_after_epoch: int | None = None
           ) -> RunResult | None:
    """Train ``config`` as one model over ``world_size`` processes and store
    it; returns the stored result (None on the ranks other than 0 when
    torchrun started this process: they train, rank 0 stores). A run
    interrupted (``stop_after_epoch``, as in ``runs.execute``, or killed)
    resumes from its checkpoint when launched again with the same width."""
    from .runs import path_of
    settings = settings or settings_module.current()
    device = resolve_device(device)
    started = _torchrun()
    check(config, world_size, device, started[1] + 1 if started else world_size)
    path = path_of(config, settings)  # an unknown dataset is an error here, not in N processes
    if started is not None:
        rank, local_rank, size = started
        if size != world_size:
            raise ValueError(f"--ddp {world_size}, but torchrun started {size} processes")
        _train_rank(rank, local_rank, size, "env://", config, device.type, settings, progress, stop_after_epoch)
        return load_result(path) if rank == 0 else None
    init_method = f"tcp://127.0.0.1:{free_port()}"
    torch.multiprocessing.spawn(_spawned, args=(world_size, init_method, config, device.type, settings, threads,
                                                progress, stop_after_epoch), nprocs=world_size, join=True)
    return load_result(path)
