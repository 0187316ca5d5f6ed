"""What a run stores beyond its ranks for the S^4Rec figures: the sequence
embeddings of one fixed user sample and every user's cluster, so t-SNE
plots, head-rate boxplots and alignment/uniformity re-render from the store
without retraining.

The arrays (``RunResult.arrays``, prefixed ``analysis_``):
- ``analysis_users`` (S,): indices of the sample, the same for every method
  and seed of a dataset (``sample_users``);
- ``analysis_embeddings`` (S, d) float16: the L2-normalised hidden state at
  the last position of each sampled user's test input (S^4Rec's z_u, Eq. 6);
- ``analysis_target_embeddings`` (S, d) float16: the L2-normalised input
  embedding of each sampled user's test item (for alignment, which pairs a
  user with the item that user chose next);
- ``analysis_clusters`` (n_users,) int16: each user's cluster under the
  method's own clustering (S^4Rec: argmax of its prototype scores, Eq. 7;
  ICLRec: its last epoch's nearest K-means intent, on its own mean-pooled
  representation), absent for methods without one.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .batching import pad_left

SAMPLE_SIZE = 2000


def sample_users(n_users: int, size: int = SAMPLE_SIZE) -> np.ndarray:
    """A fixed sample of user indices, sorted (seed 0, independent of the run's seed)."""
    if n_users <= size:
        return np.arange(n_users)
    return np.sort(np.random.default_rng(0).choice(n_users, size, replace=False))


@torch.no_grad()
def last_position_states(model, inputs: list[np.ndarray], max_len: int, batch_size: int = 512) -> torch.Tensor:
    """(N, d) hidden states at the last position of each input (its most
    recent ``max_len`` items), the model in eval mode."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(inputs), batch_size):
        chunk = [np.asarray(s)[-max_len:] for s in inputs[start:start + batch_size]]
        ids = torch.from_numpy(pad_left(chunk)).to(device)
        out.append(model(ids)[:, -1].float())
    return torch.cat(out)


def analysis_arrays(model, split, max_len: int,
                    clusters: Callable[[list[np.ndarray]], torch.Tensor] | None = None) -> dict[str, np.ndarray]:
    """The arrays above for ``split.test_inputs`` (their ``max_len`` most
    recent items); ``clusters`` maps those inputs to cluster ids (N,)."""
    inputs = [np.asarray(s)[-max_len:] for s in split.test_inputs]
    states = last_position_states(model, inputs, max_len)
    users = sample_users(len(states))
    targets = torch.as_tensor(np.asarray(split.test_targets)[users], device=states.device)
    with torch.no_grad():
        items = item_table(model)[targets]
    arrays = {"analysis_users": users,
              "analysis_embeddings": F.normalize(states[torch.from_numpy(users)], dim=-1).numpy().astype(np.float16),
              "analysis_target_embeddings": F.normalize(items.float(), dim=-1).cpu().numpy().astype(np.float16)}
    if clusters is not None:
        arrays["analysis_clusters"] = np.asarray(clusters(inputs).cpu()).astype(np.int16)
    return arrays


def item_table(model) -> torch.Tensor:
    """The input item embedding table (rows = item ids) of a next-item encoder
    or of a model wrapping one (``model.encoder``)."""
    encoder = getattr(model, "encoder", model)
    return encoder.item_embedding.weight


def alignment(x: np.ndarray, y: np.ndarray) -> float:
    """Wang and Isola's alignment: mean squared distance of positive pairs of
    L2-normalised rows (lower is better aligned)."""
    x, y = _normalise(x), _normalise(y)
    return float(((x - y) ** 2).sum(1).mean())


def uniformity(x: np.ndarray, t: float = 2.0) -> float:
    """Wang and Isola's uniformity: log mean exp(-t ||x_i - x_j||^2) over
    distinct pairs of L2-normalised rows (lower is more uniform)."""
    x = _normalise(x)
    sq = np.clip(2 - 2 * x @ x.T, 0, None)
    i, j = np.triu_indices(len(x), k=1)
    return float(np.log(np.exp(-t * sq[i, j]).mean()))


def nearest_by_cosine(x: np.ndarray, k: int) -> np.ndarray:
    """(n, k) indices: each row's ``k`` most cosine-similar other rows of
    ``x`` (n, d), the most similar first, ties to the lower index; computed
    in ``x``'s own precision (neighbours near a tie can swap between float32
    and float64)."""
    if not 0 < k < len(x):
        raise ValueError(f"{k} nearest rows need more than {k} rows, not {len(x)}")
    x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def nearest_to(x: np.ndarray, queries, k: int, excluded=()) -> dict[int, list[int]]:
    """Each query row's ``k`` most cosine-similar rows of ``x`` (n, d), the
    most similar first, ties to the lower index, never the query itself nor
    an ``excluded`` row (e.g. 0, the padding item); in ``x``'s precision,
    one query at a time (``nearest_by_cosine`` forms all n x n similarities)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k >= len(x) - len(excluded):
        raise ValueError(f"{k} nearest rows need more than {k} rows besides the {len(excluded)} excluded, "
                         f"not {len(x) - len(excluded)}")
    outside = [q for q in queries if not 0 <= q < len(x)]
    if outside:
        raise ValueError(f"query rows must be in 0..{len(x) - 1}, got {outside[0]}")
    x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    out = {}
    for q in queries:
        sims = x @ x[q]
        sims[[*excluded, q]] = -np.inf
        out[q] = [int(i) for i in np.argsort(-sims, kind="stable")[:k]]
    return out


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
