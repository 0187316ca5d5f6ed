"""Library changes that changed what a run draws while its configuration,
and so its key, stayed the same.

Since 6516295 the library draws dropout masks on the CPU from one uniform
draw instead of PyTorch's element-wise Bernoulli: the same distribution and
scaling, other draws, so a run trained before it does not replay at a later
commit (it does at the commit in its provenance). Two single-seed runs that
differ in one switch but straddle the change also differ in their dropout
draws, which acts like a change of seed; ``mixed_masks_found`` says where a
table compares such runs.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from ..settings import REPO_ROOT

UNIFORM_DROPOUT_MASKS = "651629588e85a584eb72bd2701c6b3ae05925a02"
_MASKS = {"Bernoulli": "element-wise Bernoulli dropout masks (the code before 6516295)",
          "uniform": "dropout masks from one uniform draw (the library's since 6516295)",
          "mixed": "both kinds of dropout masks (resumed across 6516295)"}


def dropout_masks(result, repo: Path = REPO_ROOT, change: str = UNIFORM_DROPOUT_MASKS) -> str:
    """How a stored run drew its dropout masks, from the commits that trained
    it (``flags.trained_by_commits``, else its provenance commit): "uniform"
    where ``change`` is in every such commit's history, "Bernoulli" where in
    none, "mixed" where a run was resumed across it, "unknown" where a commit
    is not in ``repo``'s git history (a shallow clone, a copy without .git)."""
    commits = result.flags.get("trained_by_commits") or [result.provenance.get("commit", "")]
    kinds = set()
    for commit in commits:
        found = subprocess.run(["git", "merge-base", "--is-ancestor", change, commit.removesuffix("+dirty")],
                               cwd=repo, capture_output=True)
        kinds.add({0: "uniform", 1: "Bernoulli"}.get(found.returncode, "unknown"))
    if "unknown" in kinds:
        return "unknown"
    return kinds.pop() if len(kinds) == 1 else "mixed"


def mixed_masks_found(runs: dict, reference, what: str, seed_spread: list = (), **masks_kw) -> list[str]:
    """A line for a table of single-seed runs (``label -> result``, compared
    with ``reference``) whose rows drew their dropout masks otherwise than
    the reference (``dropout_masks``), naming them; with ``seed_spread``
    (the reference's method at several seeds) the range of its test NDCG@10,
    the scale of a change of draws. None where every row drew as the
    reference did, or where that cannot be told."""
    stored = {label: r for label, r in runs.items() if r is not None}
    if reference not in stored:
        return []
    masks = {label: dropout_masks(r, **masks_kw) for label, r in stored.items()}
    if "unknown" in masks.values():
        return []
    others = [label for label in stored if label != reference and masks[label] != masks[reference]]
    if not others:
        return []
    kinds = sorted({masks[label] for label in others})
    line = (f"{what}: the reference row '{reference}' was trained with {_MASKS[masks[reference]]}, {len(others)} of "
            f"the other {len(stored) - 1} rows ({', '.join(others)}) with {' or '.join(_MASKS[k] for k in kinds)}: "
            "their differences from the reference also hold other dropout draws, which act like another seed")
    values = [r.test_metrics["NDCG@10"] for r in seed_spread if r is not None]
    if len(values) > 1:
        low, high = min(values), max(values)
        line += (f"; the reference's method over {len(values)} seeds spans {100 * (high - low) / (sum(values) / len(values)):.1f}% "
                 f"of test NDCG@10 ({low:.4f} to {high:.4f})")
    return [line]
