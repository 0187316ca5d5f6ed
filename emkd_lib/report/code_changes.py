"""Library changes that changed what a run draws while its configuration,
and so its key, stayed the same.

Since 6516295 the library draws dropout masks on the CPU from one uniform
draw instead of PyTorch's element-wise Bernoulli: the same distribution and
scaling, other draws, so a run trained before it does not replay at a later
commit (it does at the commit in its provenance). Two single-seed runs that
differ in one switch but straddle the change also differ in their dropout
draws, which acts like a change of seed, as does training on another CPU
type where bf16 rounds otherwise; ``other_draws_found`` says where a table
compares such runs.

Since 0dacc9d EMKD's masked item prediction has a hand-written gradient
(``losses._ItemCrossEntropy``): the same loss, its gradient equal to
autograd's only to within rounding, so an EMKD run trained across that
commit would not replay either. No stored run straddles it, and every EMKD
run trained since is an fp32 run, which ``other_draws_found`` names by its
precision beside the bf16 runs; the one fp32 EMKD run from before it is
chapter 10's precision check (the fidelity table's ``FALLBACK_REFERENCE``
row), whose difference from a later fp32 row holds this rounding too
(tests/test_code_changes.py checks all three against the history).
"""
from __future__ import annotations

UNIFORM_DROPOUT_MASKS = "651629588e85a584eb72bd2701c6b3ae05925a02"
HAND_WRITTEN_ITEM_CE = "0dacc9db7b02d8ceb0a0ebe5f8e75259db60b7be"
# The commits that trained a stored run without the change in their history,
# listed so that the book tells a run's masks without git (a shallow clone, a
# copy without .git); tests/test_code_changes.py checks the list against the
# history where it has one. Every later commit descends from the change.
BERNOULLI_MASK_COMMITS = frozenset({
    "1529ef0b900ece1039f9d041a5ae20d65590c882",
    "2bb9e7e143731a23cde0b985b495d80da9f76476",
    "34ec80e1e8fb0f5ca4a657f1d82a48a563cee10e",
    "367ccc8ee124a46e1deba8cddcfadb81f1eecb79",
    "3695ab4303af3540efb9a427664e56da88840c31",
    "49cf2854190e84c3211f59ac0a1e22c3912f384b",
    "4e9a6c075bbfd9da63b1622ae29bb9ca586b1863",
    "5f6b267452225dd7228281342e0a3342c540c14c",
    "63fdb48c48de806b0132a79d842e50633d900639",
    "992bcf2565cfe04fabf28193f3da8ec9aa20a5e4",
    "99eba05e2d6b0f5ad0b704ae3b8b6674d5ec3fb6",
    "9f400c430621a15cba65fd0a8e06ae5284012f7c",
    "a9b73b40dbc32472cdbbe484f0e56b8d14e871d5",
    "afd4083106d17a428660c971a34d8f84b400d28d",
    "b2d627e8b29d8ce6f57383d810750605e268f839",
    "b571fa233246ca6533bc8c66cc3808c901bb3151",
    "b7d1507a256287a4369e091cd0104d91fe2623e2",
    "c5c974b91b4b6d27d8dd1ad8a2a427a48a762ece",
    "e198c42adae0573b9a3ec3c8370faab5dd1f35a2",
    "fe5d481e3e5800ba9a0e9bafa311768bf0d255a0",
})


def run_commits(result) -> list[str]:
    """The commits that trained a stored run (``flags.trained_by_commits``,
    else its provenance commit), without a "+dirty" mark."""
    commits = result.flags.get("trained_by_commits") or [result.provenance.get("commit", "")]
    return [c.removesuffix("+dirty") for c in commits]


def dropout_masks(result, bernoulli_commits=BERNOULLI_MASK_COMMITS) -> str:
    """How a stored run drew its dropout masks: "Bernoulli" where every
    commit that trained it is in ``bernoulli_commits``, "uniform" where none
    is, "mixed" where it was resumed across the change."""
    kinds = {"Bernoulli" if c in bernoulli_commits else "uniform" for c in run_commits(result)}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def cpu_type(result) -> str:
    """The CPU a run trained on, from its provenance ("AMD EPYC x2 (torch
    threads 1)" -> "AMD EPYC"): bf16 rounds otherwise on another CPU type."""
    return result.provenance.get("machine", "?").split(" x")[0]


def epoch_cpu_types(result) -> list[str]:
    """The CPU type that trained each epoch of a stored run's history: the
    machine stamped on the epoch's row, else (epochs trained before machines
    were stamped) the run's last machine, ``cpu_type``."""
    last = cpu_type(result)
    return [row["machine"].split(" x")[0] if row.get("machine") else last for row in result.history]


def distinct_text(values) -> str:
    """Each distinct value once, in first-seen order, joined by "and" (the
    CPUs that trained a run's epochs: "AMD EPYC and Intel(R) Xeon(R) Processor")."""
    return " and ".join(dict.fromkeys(values))


def epoch_cpu_units(result) -> list[tuple[str, ...] | None]:
    """The vector units (``store.NUMERIC_CPU_FEATURES``) of the CPU that
    trained each epoch of a stored run, where the epoch's row records them
    (rows stamped since the stamp names them), else None: one CPU name covers
    machines with other units (AMD EPYCs with and without AVX-512), which
    round otherwise."""
    return [tuple(row["cpu_features"]) if row.get("cpu_features") is not None else None for row in result.history]


def other_draws_found(runs: dict, reference, what: str, seed_spread: list = (), **masks_kw) -> list[str]:
    """A line for a table of single-seed runs (``label -> result``, compared
    with ``reference``) naming the rows that drew their dropout masks
    otherwise than the reference (``dropout_masks``), trained on other
    CPU types (``epoch_cpu_types``) or at another precision (fp32 where the
    reference trained under bf16 autocast, ``studies.emkd.FALLBACK_PRECISION``):
    such a row is not the reference with one switch changed but also another
    draw, like another seed. With ``seed_spread``
    (the reference's method at several seeds) the range of its test NDCG@10,
    the scale of such a draw. None where every row drew as the reference
    did."""
    stored = {label: r for label, r in runs.items() if r is not None}
    if reference not in stored:
        return []
    masks = {label: dropout_masks(r, **masks_kw) for label, r in stored.items()}
    cpus = {label: distinct_text(epoch_cpu_types(r)) or cpu_type(r) for label, r in stored.items()}
    precisions = {label: r.config.train.precision for label, r in stored.items()}
    apart = {label: " ".join(part for part, differs in ((f"{masks[label]} masks", masks[label] != masks[reference]),
                                                       (f"on {cpus[label]}", cpus[label] != cpus[reference]),
                                                       (f"in {precisions[label]}",
                                                        precisions[label] != precisions[reference]))
                             if differs)
             for label in stored if label != reference}
    # rows that drew otherwise in the same way are named together, after that way
    groups: dict[str, list] = {}
    for label, how in apart.items():
        if how:
            groups.setdefault(how, []).append(f'"{label}"')
    if not groups:
        return []
    n_apart = sum(map(len, groups.values()))
    one = n_apart == 1
    # the reference's precision is named only where a row trained at another
    precision = f" in {precisions[reference]}" if len(set(precisions.values())) > 1 else ""
    others = len(stored) - 1
    line = (f"{what}: the reference row \"{reference}\" was trained with {masks[reference]} dropout masks on "
            f"{cpus[reference]}{precision}; " + ("the other row drew otherwise (" if others == 1 else
                                       f"{n_apart} of the other {others} rows drew otherwise (")
            + "; ".join(f"{how}: {', '.join(labels)}" for how, labels in groups.items())
            + f"), so {'its difference' if one else 'their differences'} from the reference also "
              f"{'holds' if one else 'hold'} other dropout draws or other floating-point rounding, which act like "
              f"another seed")
    values = [r.test_metrics["NDCG@10"] for r in seed_spread if r is not None]
    if len(values) > 1:
        low, high = min(values), max(values)
        mean = sum(values) / len(values)
        line += (f"; the reference's method over {len(values)} seeds spans {100 * (high - low) / mean:.1f}% "
                 f"of test NDCG@10 ({low:.4f} to {high:.4f})")
    return [line]
