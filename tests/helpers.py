"""Synthetic data the tests share."""
import numpy as np

from emkd_lib.data import ItemAttributes, SequenceDataset


def successor_dataset(n_users=120, n_items=20, length=8, seed=0, variable_lengths=False, n_attributes=0):
    """Histories that walk a fixed cycle of items: the next item is a function
    of the current one, so a working model must learn to rank it first.
    ``variable_lengths``: lengths drawn from 4 .. length + 3 (drawn before
    the start items); ``n_attributes``: random 0/1 item attributes (drawn last)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, length + 4, n_users) if variable_lengths else np.full(n_users, length)
    starts = rng.integers(0, n_items, n_users)
    seqs = [((s + np.arange(n)) % n_items + 1).astype(np.int64) for s, n in zip(starts, lengths)]
    attributes = None
    if n_attributes:
        table = rng.random((n_items + 1, n_attributes)) < 0.5
        table[0] = False
        attributes = ItemAttributes(indptr=np.concatenate([[0], np.cumsum(table.sum(1))]).astype(np.int64),
                                    indices=(np.nonzero(table)[1] + 1).astype(np.int64), n_attributes=n_attributes)
    return SequenceDataset(name="successor", user_ids=np.arange(n_users), sequences=seqs, n_items=n_items,
                           attributes=attributes, source="synthetic")


def offline_folder(name: str):
    """Where a run would find ``name`` without downloading (the library's own
    resolution: $EMKD_DATA_DIR, else the default places), or None."""
    from emkd_lib import settings
    from emkd_lib.data.fetch import resolve_dataset_dir
    from emkd_lib.data.registry import dataset_spec
    try:
        return resolve_dataset_dir(dataset_spec(name), settings.current().data_dir, download=False)
    except FileNotFoundError:
        return None


def dataset_available(name: str) -> bool:
    return offline_folder(name) is not None


def offline_data_root():
    """The data directory holding the offline Beauty files (what a test's
    subprocess gets as $EMKD_DATA_DIR), or None where there is none."""
    folder = offline_folder("beauty")
    return None if folder is None else folder.parent


def needs_dataset(name: str):
    """Skip a test that reads ``name`` where it is not available offline
    (a clone outside the work tree with no $EMKD_DATA_DIR)."""
    import pytest
    return pytest.mark.skipif(not dataset_available(name), reason=f"dataset {name!r} is not available offline")


def store_stub_run(config, ndcg: float = 0.1, train_seconds: float = 1.0) -> None:
    """A stored result of ``config`` (in the current results folder) with
    test NDCG@10 ``ndcg`` and no history: what a lookup needs, nothing trained."""
    from emkd_lib import store
    from emkd_lib.runs import key_of, path_of
    store.store_result(store.RunResult(
        config=config, key=key_of(config), valid_metrics={"NDCG@10": 0.1}, test_metrics={"NDCG@10": ndcg},
        history=[], best_epoch=1, n_params=1, train_seconds=train_seconds, eval_seconds=0.0, peak_memory_mb=1.0,
        provenance={"commit": "abc", "machine": "test, torch threads 1"},
        flags={"dirty": False, "below_popularity": False}, path=path_of(config),
        arrays={"test_ranks": np.zeros(3, dtype=int)}))


def store_stub_checkpoint(config, epoch: int = 3, best_epoch: int = 2, best_score: float = 0.01,
                          train_seconds: float = 60.0, eval_seconds: float = 6.0) -> None:
    """A checkpoint of ``config`` (in the current cache) holding only the
    fields ``grid --plan`` reads: a half-done run, nothing trained."""
    import torch

    from emkd_lib import settings
    from emkd_lib.runs import checkpoint_path, key_of
    path = checkpoint_path(key_of(config), settings.current())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": epoch, "best_epoch": best_epoch, "best_score": best_score, "train_seconds": train_seconds,
                "eval_seconds": eval_seconds, "stopped": False}, path)
