"""The arrays stored for the S^4Rec figures, and alignment/uniformity against brute force."""
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import helpers
from emkd_lib.analysis import (SAMPLE_SIZE, alignment, last_position_states, sample_users,
                               uniformity)
from emkd_lib.batching import pad_left
from emkd_lib.config import DataConfig, RunConfig, TrainConfig
from emkd_lib.data import leave_one_out
from emkd_lib.methods import build_method
from emkd_lib.methods.iclrec import ICLRecParams
from emkd_lib.methods.s4rec import S4RecParams
from emkd_lib.models.encoders import TransformerConfig
from emkd_lib.train import fit


def test_sample_is_fixed_sorted_and_independent_of_anything_but_the_user_count():
    a, b = sample_users(10_000), sample_users(10_000)
    assert np.array_equal(a, b) and len(a) == SAMPLE_SIZE and np.all(np.diff(a) > 0)
    assert np.array_equal(sample_users(50), np.arange(50))


def test_alignment_and_uniformity_match_brute_force():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    xn, yn = x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True)
    assert alignment(x, y) == pytest.approx(np.mean([np.sum((a - b) ** 2) for a, b in zip(xn, yn)]))
    pairs = [np.exp(-2 * np.sum((xn[i] - xn[j]) ** 2)) for i in range(7) for j in range(i + 1, 7)]
    assert uniformity(x) == pytest.approx(np.log(np.mean(pairs)))
    assert alignment(x, x) == pytest.approx(0.0, abs=1e-12)


def _config(method, params):
    return RunConfig(dataset="successor", method=method, profile="cpu",
                     encoder_config=TransformerConfig(hidden=16, n_blocks=1, n_heads=1, dropout=0.0),
                     params=params, data=DataConfig(max_len=10), train=TrainConfig(batch_size=32, epochs=2))


@pytest.mark.parametrize("method,params", [("sasrec", None), ("s4rec", S4RecParams(n_prototypes=4)),
                                           ("iclrec", ICLRecParams(n_intents=4))])
def test_each_method_stores_embeddings_of_the_sample_and_its_own_clusters(method, params):
    dataset = helpers.successor_dataset(variable_lengths=True)
    split = leave_one_out(dataset.sequences)
    config = _config(method, params)
    torch.manual_seed(0)
    model, recipe = build_method(config, dataset)
    fit(model, recipe, split, config.train, seed=0, progress=False)
    arrays = recipe.analysis(model, split)
    inputs = [s[-9:] for s in split.test_inputs]
    model.eval()
    with torch.no_grad():   # each sampled user alone through the model: its last position's state
        sampled = torch.cat([model(torch.from_numpy(pad_left([inputs[u]])))[:, -1] for u in arrays["analysis_users"]])
    np.testing.assert_allclose(arrays["analysis_embeddings"].astype(np.float32),
                               F.normalize(sampled, dim=-1).numpy(), atol=2e-3)
    states = last_position_states(model, inputs, 9)
    encoder = getattr(model, "encoder", model)
    targets = split.test_targets[arrays["analysis_users"]]
    items = F.normalize(encoder.item_embedding.weight[torch.from_numpy(targets)], dim=-1)
    np.testing.assert_allclose(arrays["analysis_target_embeddings"].astype(np.float32), items.detach().numpy(),
                               atol=2e-3)
    if method == "sasrec":
        assert "analysis_clusters" not in arrays
        return
    clusters = arrays["analysis_clusters"]
    assert clusters.shape == (len(split.test_inputs),) and clusters.dtype == np.int16
    if method == "s4rec":   # argmax of the prototype scores of z_u (Eq. 7)
        direct = (F.normalize(states, dim=-1) @ model.prototypes().T).argmax(1)
    else:                    # nearest intent of the last epoch on ICLRec's mean representation
        with torch.no_grad():
            ids = torch.from_numpy(pad_left(inputs))
            hidden = model(ids)
            real = (ids > 0).unsqueeze(-1).float()
            reps = (hidden * real).sum(1) / real.sum(1)
        direct = torch.cdist(reps, model.intents.centroids).argmin(1)
    assert np.array_equal(clusters, direct.numpy())
    assert clusters.min() >= 0 and clusters.max() < 4


class _Stored:
    """A stored run's stand-in: ``ranks()`` gives its arrays."""

    def __init__(self, clusters):
        self._arrays = {} if clusters is None else {"analysis_clusters": np.asarray(clusters)}

    def ranks(self):
        return self._arrays


def test_head_rate_by_cluster_counts_each_clusters_head_users():
    from emkd_lib.report import clusters as cl
    head = np.array([True, False, False, True, True, False])
    frame = cl.head_rate_by_cluster(_Stored([0, 0, 1, 1, 1, -1]), head).set_index("cluster")
    assert frame.loc[0, "users"] == 2 and frame.loc[0, "head_rate"] == 0.5
    assert frame.loc[1, "users"] == 3 and frame.loc[1, "head_rate"] == pytest.approx(2 / 3)
    assert -1 not in frame.index                      # users without a cluster are left out


def test_head_rates_gathers_the_clustered_methods_of_every_dataset():
    from emkd_lib.report import clusters as cl
    head = {"a": np.array([True, False]), "b": np.array([False, False])}
    by_dataset = {"a": {"ICLRec": _Stored([0, 1]), "S4Rec": _Stored(None), "SASRec": _Stored([0, 0])},
                  "b": {"S4Rec": _Stored([2, 2]), "ICLRec": None}}
    rates = cl.head_rates(by_dataset, head)
    assert sorted(zip(rates.dataset, rates.method, rates.cluster)) == [("a", "ICLRec", 0), ("a", "ICLRec", 1),
                                                                       ("b", "S4Rec", 2)]
    assert list(rates[rates.dataset == "a"].head_rate) == [1.0, 0.0]
    assert not len(cl.head_rates({"a": {}}, head))
    (line,) = cl.head_rate_spread({"a ICLRec": rates[rates.dataset == "a"]})
    assert "median 0.50, interquartile range 0.25-0.75 over 2 clusters" in line
    sized = rates[rates.dataset == "a"].assign(users=[400, 400], head_rate=[0.2, 0.3])
    (line,) = cl.head_rate_spread({"a ICLRec": sized})
    assert line.endswith(f"; its width 0.05 against {cl.chance_head_rate_iqr(sized):.2f} for clusters of the same "
                         "sizes filled at random")


class _Ranked:
    def __init__(self, ranks):
        self.test_ranks = np.asarray(ranks)


def test_head_tail_found_states_each_groups_change_and_paired_test():
    from emkd_lib.report import clusters as cl
    head = np.arange(40) < 10
    reference = _Ranked(np.where(head, 0, 100))      # head: NDCG@20 1; tail: 0
    other = _Ranked(np.where(head, 1, 0))            # head: 1 / log2(3); tail: 1
    head_line, tail_line = cl.head_tail_found({"S4Rec": reference, "ICLRec": other}, head, "S4Rec", "ICLRec", "beauty")
    # Ten equal positive differences: the exact two-sided Wilcoxon p is 2 / 2^10.
    assert head_line == ("beauty head users (10): S4Rec NDCG@20 1.0000 against ICLRec 0.6309 "
                         "(+58.5%, p = 0.002: higher, significant at p < 0.01, as the paper's Figure 4 reports)")
    assert tail_line.startswith("beauty tail users (30): S4Rec NDCG@20 0.0000 against ICLRec 1.0000 (-100.0%")
    assert tail_line.endswith("lower, significant at p < 0.01, unlike the paper's Figure 4)")
    # the paper's Figure 4 shows Beauty only: elsewhere no line speaks for it
    toys = cl.head_tail_found({"S4Rec": reference, "ICLRec": other}, head, "S4Rec", "ICLRec", "toys")
    assert toys[0].endswith("(+58.5%, p = 0.002: higher, significant at p < 0.01)")
    assert toys[1].endswith("lower, significant at p < 0.01)")
    same = cl.head_tail_found({"S4Rec": reference, "ICLRec": reference}, head, "S4Rec", "ICLRec", "beauty")
    tail = "no significant difference at p < 0.01, where the paper's Figure 4 reports a gain)"
    assert same[0].endswith(f"(+0.0%, p = 1: {tail}")
    assert same[1].endswith(f"(no relative change: zero base, p = 1: {tail}")
    assert cl.head_tail_found({"S4Rec": reference}, head, "S4Rec", "ICLRec", "d") == [
        "d: S4Rec against ICLRec by head and tail: not both run yet"]


def test_head_tail_gap_found_says_for_which_methods_tail_users_score_lower():
    from emkd_lib.report import clusters as cl
    head = np.arange(40) < 10
    tail_worse = _Ranked(np.where(head, 0, 100))     # head NDCG@20 1, tail 0
    tail_better = _Ranked(np.where(head, 1, 0))      # head 1 / log2(3), tail 1
    (line,) = cl.head_tail_gap_found({"SASRec": tail_worse, "S4Rec": tail_better, "ICLRec": None}, head, "d")
    assert line == ("d: tail users score lower than head users for SASRec only "
                    "(NDCG@20, tail against head: SASRec 0.0000 against 1.0000, S4Rec 1.0000 against 0.6309)")
    (line,) = cl.head_tail_gap_found({"SASRec": tail_worse, "ICLRec": tail_worse}, head, "d")
    assert line.startswith("d: tail users score lower than head users for every method, as the paper's premise")
    (line,) = cl.head_tail_gap_found({"S4Rec": tail_better, "ICLRec": tail_better}, head, "d")
    assert line.startswith("d: tail users score no lower than head users for any method, against the paper's premise")
    (line,) = cl.head_tail_gap_found({"SASRec": tail_worse}, head, "d")
    assert line == ("d: for SASRec, the one method stored so far, tail users score lower than head users "
                    "(NDCG@20, tail against head: SASRec 0.0000 against 1.0000)")
    (line,) = cl.head_tail_gap_found({"S4Rec": tail_better}, head, "d")
    assert line.startswith("d: for S4Rec, the one method stored so far, tail users score no lower than head users")
    assert cl.head_tail_gap_found({"S4Rec": None}, head, "d") == ["d: head against tail users: nothing run yet"]


def test_group_changes_table_tests_the_variant_inside_each_group():
    from emkd_lib.report import clusters as cl
    head = np.arange(40) < 10
    buckets = _Ranked(np.where(head, 1, 0))          # head 1 / log2(3), tail 1
    shuffled = _Ranked(np.where(head, 0, 100))       # head 1, tail 0
    table = cl.group_changes_table({"S4Rec": {"length buckets": buckets, "shuffled": shuffled},
                                    "ICLRec": {"length buckets": buckets, "shuffled": None}},
                                   head, "length buckets", "shuffled")
    assert list(table.index) == [("S4Rec", "head"), ("S4Rec", "tail")]
    head_row, tail_row = table.loc[("S4Rec", "head")], table.loc[("S4Rec", "tail")]
    assert head_row["users"] == 10 and tail_row["users"] == 30
    assert head_row["length buckets NDCG@20"] == pytest.approx(1 / np.log2(3)) and head_row["shuffled NDCG@20"] == 1.0
    assert head_row["change %"] == pytest.approx(100 * (np.log2(3) - 1))
    assert tail_row["change %"] == pytest.approx(-100.0)
    assert head_row["p (Wilcoxon)"] == pytest.approx(2 / 2 ** 10)   # ten equal gains: the exact two-sided p
    assert cl.group_changes_table({"x": {"length buckets": None}}, head, "length buckets", "shuffled").columns.tolist() == ["status"]


def test_head_rate_compactness_compares_interquartile_ranges():
    from emkd_lib.report import clusters as cl
    wide = pd.DataFrame({"head_rate": [0.1, 0.2, 0.3, 0.4, 0.5]})      # IQR 0.2
    narrow = pd.DataFrame({"head_rate": [0.2, 0.2, 0.25, 0.3, 0.3]})   # IQR 0.1
    (line,) = cl.head_rate_compactness({"S4Rec": narrow, "ICLRec": wide}, "S4Rec", "ICLRec", "d")
    assert line == ("d: S4Rec's interquartile range of cluster head rates is narrower than ICLRec's "
                    "(0.10 against 0.20), in the direction the paper's Figure 3 reports")
    (line,) = cl.head_rate_compactness({"S4Rec": wide, "ICLRec": narrow}, "S4Rec", "ICLRec", "d")
    assert "is wider than ICLRec's (0.20 against 0.10), unlike the paper's Figure 3" in line
    assert cl.head_rate_compactness({"S4Rec": wide}, "S4Rec", "ICLRec", "d") == []
    sized = {"S4Rec": narrow.assign(users=1000), "ICLRec": wide.assign(users=10)}
    (line,) = cl.head_rate_compactness(sized, "S4Rec", "ICLRec", "d")
    chance = cl.chance_head_rate_iqr(sized["S4Rec"]), cl.chance_head_rate_iqr(sized["ICLRec"])
    assert (f"; clusters of the same sizes filled at random would give {chance[0]:.2f} and {chance[1]:.2f}, "
            "so beyond chance S4Rec's range is") in line
    # Clusters of 10 users spread their head rates by chance alone almost as wide as ICLRec's 0.20, and
    # from one draw to the next by 0.1: S4Rec's narrower range is not narrower beyond chance.
    assert chance[0] < 0.03 and chance[1] > 0.1
    assert line.endswith(": beyond chance the claim of the paper's Figure 3 is not supported")
    big = {label: f.assign(users=1000) for label, f in (("narrow", narrow), ("wide", wide))}
    (line,) = cl.head_rate_compactness({"S4Rec": big["narrow"], "ICLRec": big["wide"]}, "S4Rec", "ICLRec", "d")
    assert "beyond chance S4Rec's range is narrower than ICLRec's" in line
    assert line.endswith(": the claim of the paper's Figure 3 holds beyond chance")
    (line,) = cl.head_rate_compactness({"S4Rec": big["wide"], "ICLRec": big["narrow"]}, "S4Rec", "ICLRec", "d")
    assert line.endswith(": beyond chance the claim of the paper's Figure 3 is reversed")
    # another figure's claim read the same way (chapter 07: Figure 6(b), lambda's largest against its smallest)
    (line,) = cl.head_rate_compactness({"a": big["narrow"], "b": big["wide"]}, "a", "b", "d",
                                       figure="the paper's Figure 6(b)")
    assert "in the direction the paper's Figure 6(b) reports" in line
    assert line.endswith(": the claim of the paper's Figure 6(b) holds beyond chance")


def test_lambda_head_rate_found_reads_the_largest_lambda_against_the_smallest():
    from emkd_lib.report import clusters as cl
    from emkd_lib.studies.s4rec import lambda_head_rate_found
    narrow = pd.DataFrame({"head_rate": [0.2, 0.2, 0.25, 0.3, 0.3]})
    wide = pd.DataFrame({"head_rate": [0.1, 0.2, 0.3, 0.4, 0.5]})
    middle = pd.DataFrame({"head_rate": [0.1, 0.2, 0.25, 0.3, 0.5]})
    lines = lambda_head_rate_found({0.0: wide, 0.1: middle, 1.0: narrow}, "d")
    spread = cl.head_rate_spread({"λ = 0.0": wide, "λ = 0.1": middle, "λ = 1.0": narrow})
    assert lines[:3] == spread and len(lines) == 4
    assert lines[3].startswith("d: λ = 1.0's interquartile range of cluster head rates is narrower than λ = 0.0's "
                               "(0.10 against 0.20), in the direction the paper's Figure 6(b) reports")
    # one value of lambda stored: its spread, nothing to compare
    assert lambda_head_rate_found({0.1: middle}, "d") == cl.head_rate_spread({"λ = 0.1": middle})
    assert lambda_head_rate_found({}, "d") == cl.head_rate_spread({})


def test_chance_head_rate_iqr_shrinks_with_the_clusters_size():
    from emkd_lib.report import clusters as cl
    # clusters of one user: every rate is 0 or 1, and with half the users head the quartiles are 0 and 1
    singles = pd.DataFrame({"users": [1] * 8, "head_rate": [1.0] * 4 + [0.0] * 4})
    assert cl.chance_head_rate_iqr(singles) == 1.0
    # the same head share in clusters of 2,000: binomial spread sqrt(0.25 / 2000) ~ 0.011, IQR ~ 1.35 of it
    large = pd.DataFrame({"users": [2000] * 8, "head_rate": [0.5] * 8})
    assert 0.005 < cl.chance_head_rate_iqr(large) < 0.03
    assert cl.chance_head_rate_iqr(large, seed=1) != cl.chance_head_rate_iqr(large, seed=2)
    assert cl.chance_head_rate_iqr(large, seed=3) == cl.chance_head_rate_iqr(large, seed=3)


def test_batch_composition_counts_one_length_and_one_group_batches(monkeypatch):
    """Eight tail users with 3 training items and two head users with 9: in
    length buckets of two every batch is of one length and one group; shuffled,
    the shares are those of one draw of `training_batches` with seed 0."""
    from types import SimpleNamespace
    from emkd_lib.report import clusters as cl
    train = [np.arange(1, 4)] * 8 + [np.arange(1, 10)] * 2
    monkeypatch.setattr(cl, "run_data", lambda config: (None, SimpleNamespace(train=train)))
    config = RunConfig(dataset="beauty", method="s4rec", profile="smoke", data=DataConfig(max_len=20),
                       train=TrainConfig(batch_size=2), params=S4RecParams(head_fraction=0.2))
    table = cl.batch_composition(config)
    assert list(table.index) == ["length-buckets", "shuffled"] and (table["batches per epoch"] == 5).all()
    assert table.loc["length-buckets"].to_dict() == {"batches per epoch": 5, "one length %": 100.0,
                                                      "head users only %": 20.0, "tail users only %": 80.0,
                                                      "rows beside their user's other window %": 0.0,
                                                      "tail users' share of the next-item loss weight %": 80.0}
    # shuffled: counted over one draw of the batches with batch_composition's default seed, 0
    from emkd_lib.batching import training_batches
    batches = training_batches(np.array([3] * 8 + [9] * 2), 2, "shuffled", np.random.default_rng(0))
    head_count = np.array([sum(i >= 8 for i in b) for b in batches])   # users 8 and 9 are the head
    assert sorted(i for b in batches for i in b) == list(range(10))
    assert table.loc["shuffled", "head users only %"] == 100 * np.mean(head_count == 2)
    assert table.loc["shuffled", "tail users only %"] == 100 * np.mean(head_count == 0)
    assert table.loc["shuffled", "one length %"] == 100 * np.mean(head_count != 1)
    # Windows of 4 cut from the end every item: each head user now gives 6 windows, all of one length.
    config = config.replace(data__max_len=4, data__windows="tail")
    table = cl.batch_composition(config)
    users, lengths = [*range(8), *[8] * 6, *[9] * 6], [3] * 8 + [4] * 12
    for order in ("length-buckets", "shuffled"):
        batches = training_batches(np.array(lengths), 2, order, np.random.default_rng(0))
        beside = sum(1 for b in batches for i in b if sum(users[j] == users[i] for j in b) > 1)
        assert table.loc[order, "rows beside their user's other window %"] == 100 * beside / 20
        # each batch's mean over its predicted positions (a window of n items predicts n - 1)
        tail_share = np.mean([sum(lengths[i] - 1 for i in b if users[i] < 8) / sum(lengths[i] - 1 for i in b)
                              for b in batches])
        assert table.loc[order, "tail users' share of the next-item loss weight %"] == pytest.approx(100 * tail_share)
    assert table.loc["length-buckets", "rows beside their user's other window %"] > 0


def test_cluster_size_table_measures_the_assignments_against_an_even_split():
    from emkd_lib.report import clusters as cl
    runs = {"S4Rec": _Stored([0, 0, 0, 0, 1, 1, 2, 2, -1]), "SASRec": _Stored(None)}
    table = cl.cluster_size_table(runs)
    assert list(table.index) == ["S4Rec"]      # only runs with clusters; -1 (no cluster) is not a cluster
    row = table.loc["S4Rec"]
    assert (row["clusters used"], row["smallest (users)"], row["median (users)"], row["largest (users)"]) == (3, 2, 2, 4)
    assert row["equal share (users)"] == pytest.approx(8 / 3) and row["largest / equal share"] == pytest.approx(1.5)
    assert cl.cluster_size_found(table, "d") == [
        "d S4Rec: 3 clusters hold users, from 2 to 4 users (an even split: 3 each); the largest holds 1.5 equal shares"]
    assert cl.cluster_size_found(cl.cluster_size_table({"x": _Stored(None)}), "d") == []


class _Embedded:
    """A stored run's stand-in with a user sample's embeddings."""

    def __init__(self, users, embeddings):
        self._arrays = {"analysis_users": np.asarray(users), "analysis_embeddings": np.asarray(embeddings)}

    def ranks(self):
        return self._arrays


def test_head_neighbour_shares_count_head_users_among_each_users_nearest_by_cosine():
    from emkd_lib.report import clusters as cl
    head = np.array([False, True, True, False, False, False])       # users 1 and 2 are head
    # sample users 1, 2, 3, 4: the two head users point one way, the tail users the other
    # (lengths differ to show that cosine, not distance, decides)
    apart = _Embedded([1, 2, 3, 4], [[5.0, 0.1], [1.0, 0.0], [0.0, 1.0], [0.2, 3.0]])
    shares, is_head = cl.head_neighbour_shares(apart, head, k=1)
    assert list(is_head) == [True, True, False, False]
    assert list(shares) == [1.0, 1.0, 0.0, 0.0]
    assert cl.head_separation(shares, is_head) == 1.0
    # each head user's nearest is a tail user and the reverse: -1
    mixed = _Embedded([1, 3, 2, 4], [[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    assert cl.head_separation(*cl.head_neighbour_shares(mixed, head, k=1)) == -1.0
    with pytest.raises(ValueError, match="2 nearest users need more than 2 users"):
        cl.head_neighbour_shares(_Embedded([1, 2], [[1.0, 0.0], [0.0, 1.0]]), head, k=2)


def test_head_separation_found_reads_each_space_and_the_paired_difference():
    from emkd_lib.report import clusters as cl
    rng = np.random.default_rng(0)
    n = 200
    head = np.zeros(n, dtype=bool)
    head[:40] = True
    apart = np.where(head[:, None], [1.0, 0.0], [0.0, 1.0]) + 0.1 * rng.normal(size=(n, 2))
    mixed = rng.normal(size=(n, 2))
    runs = {"ICLRec": _Embedded(np.arange(n), apart), "S4Rec": _Embedded(np.arange(n), mixed), "SASRec": None}
    first, second = cl.head_separation_found(runs, head, "d", k=5)
    assert first.startswith("d: head users neighbour head users more than tail users do in some methods' spaces only")
    assert "20.0% of the 200 sampled users are head" in first and "SASRec" not in first
    assert "ICLRec +1.000 (95% interval +1.000 to +1.000; 100.0% head among a head user's neighbours" in first
    assert second.startswith("d: S4Rec's head and tail users are less apart than ICLRec's, as the paper's Figure 1 "
                             "argues")
    # swapped: the method that mixes is the reference's comparison, and the claim is reversed
    _, swapped = cl.head_separation_found(runs, head, "d", reference="ICLRec", other="S4Rec", k=5)
    assert swapped.startswith("d: ICLRec's head and tail users are further apart than S4Rec's, against the paper's")
    # the same space twice: no difference
    _, same = cl.head_separation_found({"ICLRec": runs["S4Rec"], "S4Rec": runs["S4Rec"]}, head, "d", k=5)
    assert "no less apart than" in same and "interval +0.000 to +0.000" in same
    assert cl.head_separation_found({"S4Rec": None}, head, "d") == []


def test_nearest_by_cosine_matches_a_brute_force_loop():
    from emkd_lib.analysis import nearest_by_cosine
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    got = nearest_by_cosine(x, 3)
    for i in range(len(x)):
        sims = [(-(x[i] @ x[j]) / (np.linalg.norm(x[i]) * np.linalg.norm(x[j])), j) for j in range(len(x)) if j != i]
        assert list(got[i]) == [j for _, j in sorted(sims)[:3]]
    # length does not matter, only direction; a tie goes to the lower index
    assert nearest_by_cosine(np.array([[1.0, 0.0], [0.0, 3.0], [2.0, 0.0], [5.0, 0.0]]), 2).tolist() == \
        [[2, 3], [0, 2], [0, 3], [0, 2]]
    with pytest.raises(ValueError, match="3 nearest rows need more than 3 rows, not 3"):
        nearest_by_cosine(x[:3], 3)


def test_a_tsne_map_is_computed_once_and_then_read_from_the_store(tmp_path, monkeypatch):
    """The map is kept under the store (another CPU's BLAS would redraw it
    otherwise); the second call reads it back instead of recomputing, so a
    stored map, even one that differs from what this machine would compute,
    is what the figure draws; its name holds the embeddings' digest, so a
    run trained again under the same key gets a map of its own."""
    import hashlib
    import types
    from emkd_lib.report import clusters as cl
    monkeypatch.setenv("EMKD_RESULTS_DIR", str(tmp_path / "results"))
    rng = np.random.default_rng(0)
    arrays = {"analysis_users": np.arange(60), "analysis_embeddings": rng.normal(size=(60, 8)).astype(np.float32)}
    run = types.SimpleNamespace(key="abc", ranks=lambda: arrays)
    first = cl.tsne_coordinates(run)
    path = cl.tsne_path(run)
    digest = hashlib.sha256(arrays["analysis_embeddings"].tobytes()).hexdigest()[:12]
    assert first.shape == (60, 2) and path == tmp_path / "results" / "derived" / f"tsne-abc-{digest}-seed0.npy"
    assert np.array_equal(np.load(path), first)
    np.save(path, first + 1.0)                       # as if stored on another machine
    assert np.array_equal(cl.tsne_coordinates(run), first + 1.0)
    # the same key trained again: other embeddings, another map, the old one left as it was
    retrained = types.SimpleNamespace(key="abc", ranks=lambda: {**arrays, "analysis_embeddings":
                                                                 arrays["analysis_embeddings"][::-1].copy()})
    assert cl.tsne_path(retrained) != path
    assert np.array_equal(cl.tsne_coordinates(retrained), np.load(cl.tsne_path(retrained)))   # mapped and kept anew
    assert np.array_equal(np.load(path), first + 1.0)
    frame = cl.tsne_frame(run, np.arange(60) < 12)
    assert list(frame.columns) == ["x", "y", "head", "cluster"] and frame["head"].sum() == 12
    assert (frame["cluster"] == -1).all()


def test_nearest_to_agrees_with_all_pairs_and_never_returns_the_query_or_an_excluded_row():
    from emkd_lib.analysis import nearest_by_cosine, nearest_to
    x = np.random.default_rng(3).normal(size=(12, 5))
    every = nearest_by_cosine(x, 3)
    assert nearest_to(x, range(12), 3) == {q: every[q].tolist() for q in range(12)}
    some = nearest_to(x, [2, 7], 10, excluded=(0,))
    assert all(0 not in items and q not in items and len(items) == 10 for q, items in some.items())
    with pytest.raises(ValueError, match="11 nearest rows need more than 11 rows besides the 1 excluded, not 11"):
        nearest_to(x, [2], 11, excluded=(0,))
    with pytest.raises(ValueError, match="^k must be a positive integer, got 0$"):
        nearest_to(x, [2], 0)
    with pytest.raises(ValueError, match=r"^query rows must be in 0\.\.11, got -1$"):
        nearest_to(x, [2, -1], 3)
    # by hand: cosine similarities of query 2, the most similar first
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = {i: float(unit[2] @ unit[i]) for i in range(1, 12) if i != 2}
    assert some[2] == sorted(sims, key=lambda i: -sims[i])


def test_group_changes_found_says_which_group_the_change_falls_on():
    import pandas as pd
    from emkd_lib.report import clusters as cl
    index = pd.MultiIndex.from_tuples([("SASRec", "head"), ("SASRec", "tail"), ("S4Rec", "head"), ("S4Rec", "tail")],
                                      names=["method", "group"])
    table = pd.DataFrame({"change %": [2.0, -11.3, -3.2, -17.2], "p (Wilcoxon)": [0.66, 1e-9, 0.002, 1e-12]},
                         index=index)
    sasrec, s4rec = cl.group_changes_found(table, "beauty, shuffled")
    assert sasrec == ("beauty, shuffled, SASRec: tail users -11.3% (p = 1.0e-09, significant), head users +2.0% "
                      "(p = 0.660, not significant): the change falls on the tail users only")
    assert s4rec.endswith(": both groups change significantly")
    calm = table.assign(**{"p (Wilcoxon)": 0.5})
    assert all(line.endswith("neither group changes significantly") for line in cl.group_changes_found(calm, "x"))
    assert cl.group_changes_found(pd.DataFrame({"status": ["no pair stored yet"]}), "x") == ["x: no pair stored yet"]
    zero = table.assign(**{"change %": [np.nan, -11.3, -3.2, -17.2]})    # a reference group that scores 0
    assert "head users no relative change (the reference scores 0) (p = 0.660" in cl.group_changes_found(zero, "x")[0]
