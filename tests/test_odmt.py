"""ODMT: the IMT's attention mask (Eq. 2), the debiased in-batch loss (Eq.
5-6) against a direct loop, the distillation terms (Eq. 9) and the ramp-up
(Eq. 10), the protocol datasets, and the method end to end on synthetic
item features (the real extractors need the multimodal extra)."""
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emkd_lib import losses
from emkd_lib.batching import pad_left
from emkd_lib.config import RunConfig
from emkd_lib.data import SequenceDataset, leave_one_out
from emkd_lib.methods import odmt
from emkd_lib.methods.odmt import (TABLE3_ABLATIONS, ODMTParams, build_single_input_with_features,
                                   build_with_features, in_batch_candidates,
                                   rampup_weight, training_log_popularity)
from emkd_lib.models.multimodal import ItemFeatures, ItemTower, id_position, imt_attention_mask
from emkd_lib.profiles import profile_config
from emkd_lib.train import fit, seed_everything
from helpers import needs_dataset

N_ITEMS, N_T, N_V, D_T, D_V = 12, 4, 3, 5, 7


def synthetic_features(n_items=N_ITEMS, image=True, seed=0, missing=(3,)) -> ItemFeatures:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n_items + 1, N_T, dtype=torch.bool)
    mask[1::2, -2:] = False                         # odd items have two padding tokens
    mask[0] = False
    feats = ItemFeatures(
        text_tokens=(torch.randn(n_items + 1, N_T, D_T, generator=g) * mask[..., None]).half(),
        text_mask=mask, text_pooled=torch.randn(n_items + 1, D_T, generator=g),
        image_patches=torch.randn(n_items + 1, N_V, D_V, generator=g).half() if image else None,
        image_pooled=torch.randn(n_items + 1, D_V, generator=g) if image else None,
        image_present=None)
    if image:
        present = torch.ones(n_items + 1, dtype=torch.bool)
        present[list(missing)] = False
        present[0] = False
        feats.image_present = present
    return feats


# ---- Eq. 2: the ID-aware attention mask -------------------------------------

def test_imt_mask_has_eq2_pattern():
    text_mask = torch.tensor([[True, True, False]])
    present = torch.tensor([True])
    n_v = 2
    allowed = imt_attention_mask(text_mask, present, n_v, with_id=True, id_mask=True)[0, 0]
    # layout: patch, patch, image CLS, ID, text CLS, token, token, (padding token)
    L = n_v + 1 + 1 + 1 + 3
    assert allowed.shape == (L, L)
    i = id_position(True, n_v)
    assert i == 3
    for row in range(L):
        for col in range(L):
            if row == col:
                expected = True
            elif col == L - 1:
                expected = False                      # the padding text token is never a key
            elif col == i:
                expected = row == i                   # only the ID attends to the ID
            else:
                expected = True
            assert bool(allowed[row, col]) == expected, (row, col)
    # the ID token attends to every real token
    assert allowed[i, :L - 1].all()


def test_imt_mask_without_id_mask_lets_modalities_attend_to_the_id():
    text_mask = torch.tensor([[True, True]])
    allowed = imt_attention_mask(text_mask, torch.tensor([True]), 2, with_id=True, id_mask=False)[0, 0]
    assert allowed.all()


def test_imt_mask_hides_the_patches_of_an_item_without_image_and_text_only_layout():
    text_mask = torch.tensor([[True, False]])
    allowed = imt_attention_mask(text_mask, torch.tensor([False]), 2, with_id=True, id_mask=True)[0, 0]
    # patch columns hidden from everyone but themselves; image CLS (the missing token) visible
    assert not allowed[2:, 0].any() and not allowed[2:, 1].any() and allowed[:, 2][[0, 1, 4]].all()
    # text only: [ID, text CLS, token, token]
    text_only = imt_attention_mask(text_mask, None, 0, with_id=True, id_mask=True)[0, 0]
    assert id_position(False, 0) == 0
    expected = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(text_only, expected)


def test_id_mask_keeps_the_modality_embeddings_independent_of_the_id():
    """With the mask, changing an item's ID embedding changes only its ID
    output; without it, the text and image outputs change too."""
    feats = synthetic_features()
    for id_mask, others_move in ((True, False), (False, True)):
        torch.manual_seed(0)
        tower = ItemTower(N_ITEMS, feats, ("id", "text", "image"), hidden=8, n_layers=2, n_heads=2,
                          dropout=0.0, joint=True, id_mask=id_mask, id_init="concat").eval()
        items = torch.tensor([1, 2, 4])
        before = tower(items)
        with torch.no_grad():
            tower.id_embedding.weight[2] += 1.0
        after = tower(items)
        assert not torch.allclose(before["id"][1], after["id"][1])
        for m in ("text", "image"):
            assert torch.allclose(before[m][1], after[m][1]) != others_move
            torch.testing.assert_close(before[m][0], after[m][0])   # other items never move


def test_id_table_initialisations():
    feats = synthetic_features()
    kwargs = dict(hidden=8, n_layers=1, n_heads=1, dropout=0.0, joint=True, id_mask=True)
    concat = ItemTower(N_ITEMS, feats, ("id", "text", "image"), id_init="concat", **kwargs).id_embedding.weight
    torch.testing.assert_close(concat[1:], torch.cat([feats.text_pooled, feats.image_pooled], 1)[1:])
    assert torch.all(concat[0] == 0)
    text = ItemTower(N_ITEMS, feats, ("id", "text", "image"), id_init="text", **kwargs).id_embedding.weight
    torch.testing.assert_close(text[1:], feats.text_pooled[1:])
    image = ItemTower(N_ITEMS, feats, ("id", "text", "image"), id_init="image", **kwargs).id_embedding.weight
    torch.testing.assert_close(image[1:], feats.image_pooled[1:])
    text_only = ItemTower(N_ITEMS, synthetic_features(image=False), ("id", "text"), id_init="concat",
                          **kwargs).id_embedding.weight
    torch.testing.assert_close(text_only[1:], feats.text_pooled[1:])


def test_missing_image_uses_the_learned_token():
    feats = synthetic_features(missing=(3,))
    tower = ItemTower(N_ITEMS, feats, ("id", "text", "image"), hidden=8, n_layers=1, n_heads=1, dropout=0.0,
                      joint=True, id_mask=True, id_init="concat")
    tokens, masks = tower._tokens(torch.tensor([2, 3]))
    torch.testing.assert_close(tokens["image"][1, -1], tower.missing_image)
    assert not masks["image"][1, :N_V].any() and masks["image"][0].all()


# ---- Eq. 5-6: debiased in-batch loss ----------------------------------------

def test_in_batch_candidates_and_debiased_loss_match_a_direct_loop():
    windows = torch.tensor([[0, 0, 3, 5, 3, 7],
                            [0, 2, 5, 1, 4, 2],
                            [1, 2, 3, 4, 6, 8]])
    rows, labels, targets, excluded = in_batch_candidates(windows)
    # positions with a target, in row-major order, and their target items
    direct = [(b, t) for b in range(3) for t in range(5) if windows[b, t] > 0]
    assert rows.sum() == len(direct)
    assert targets.tolist() == [int(windows[b, t + 1]) for b, t in direct]
    g = torch.Generator().manual_seed(0)
    P, d = len(direct), 4
    users, cands = torch.randn(P, d, generator=g, dtype=torch.float64), torch.randn(P, d, generator=g,
                                                                                     dtype=torch.float64)
    log_pop = torch.log(torch.rand(P, generator=g, dtype=torch.float64))
    logits = losses.debiased_in_batch_logits(users, cands, log_pop, excluded)
    loss = losses.debiased_in_batch_loss(logits, labels)
    total = 0.0
    for p, (b, t) in enumerate(direct):
        history = set(windows[b].tolist()) - {0}
        s = lambda c: float(users[p] @ cands[c] - log_pop[c])  # Eq. 6
        others = [c for c in range(P) if c != p and int(targets[c]) not in history]
        # the excluded set is exactly the user's own items other than this column
        assert [c for c in range(P) if c != p and excluded[p, c]] == \
               [c for c in range(P) if c != p and int(targets[c]) in history]
        total += -(s(p) - math.log(math.exp(s(p)) + sum(math.exp(s(c)) for c in others)))  # Eq. 5
    assert loss.item() == pytest.approx(total / P, rel=1e-9)


def test_training_log_popularity_counts_training_targets():
    log_pop = training_log_popularity([np.array([1, 2, 2]), np.array([3, 2])], n_items=4)
    counts = np.array([0.5, 0.5, 3, 0.5, 0.5])   # item 1 is only ever a first item
    np.testing.assert_allclose(log_pop.numpy(), np.log(counts / counts.sum()), rtol=1e-6)


# ---- Eq. 9-10: distillation and ramp-up -------------------------------------

def test_rampup_values():
    assert rampup_weight(0, 20) == pytest.approx(math.exp(-5))
    assert rampup_weight(10, 20) == pytest.approx(math.exp(-5 * 0.25))
    assert rampup_weight(20, 20) == 1.0 and rampup_weight(35, 20) == 1.0
    assert rampup_weight(0, 0) == 1.0
    values = [rampup_weight(e, 20) for e in range(21)]
    assert all(a < b for a, b in zip(values, values[1:]))


def _kl(p_logits, q_logits, T):
    p, q = F.softmax(p_logits / T, -1), F.softmax(q_logits / T, -1)
    return T * T * (p * (p.log() - q.log())).sum(-1).mean()


def test_distillation_terms_have_eq9_teachers_and_students():
    g = torch.Generator().manual_seed(1)
    z = {m: torch.randn(4, 6, generator=g, dtype=torch.float64) for m in ("id", "text", "image")}
    T = 0.3
    terms = losses.odmt_distillation_loss(z, T)
    ensemble = (z["id"] + z["text"] + z["image"]) / 3
    torch.testing.assert_close(terms["kl_text"], _kl(z["id"], z["text"], T))
    torch.testing.assert_close(terms["kl_image"], _kl(z["id"], z["image"], T))
    torch.testing.assert_close(terms["kl_id"], _kl(ensemble, z["id"], T))
    # not symmetric: the teacher is the first argument
    assert not torch.isclose(terms["kl_text"], _kl(z["text"], z["id"], T))
    # "w/o ID": no ID branch to teach, so the ensemble of the others teaches each of them
    without_id = losses.odmt_distillation_loss({"text": z["text"], "image": z["image"]}, T)
    assert set(without_id) == {"kl_text", "kl_image"}
    for m in ("text", "image"):
        torch.testing.assert_close(without_id[f"kl_{m}"], _kl((z["text"] + z["image"]) / 2, z[m], T))


def test_teacher_receives_gradient_unless_detached():
    g = torch.Generator().manual_seed(2)
    for detach in (False, True):
        z = {m: torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True) for m in ("id", "text")}
        losses.odmt_distillation_loss({"id": z["id"], "text": z["text"]}, 0.5, detach)["kl_text"].backward()
        assert z["text"].grad.abs().sum() > 0
        teacher_grad = z["id"].grad
        assert (teacher_grad is not None and teacher_grad.abs().sum() > 0) != detach


def test_masked_candidates_contribute_nothing_to_kl():
    teacher = torch.tensor([[1.0, 2.0, losses.MASKED_SCORE]])
    student = torch.tensor([[0.5, 1.0, losses.MASKED_SCORE]])
    T = 0.1
    value = losses._kl(teacher, student, T, False)
    assert torch.isfinite(value)
    torch.testing.assert_close(value, _kl(teacher[:, :2].double(), student[:, :2].double(), T).float())


# ---- protocol datasets -------------------------------------------------------

def test_odmt_protocol_keeps_users_with_six_items_cut_to_fifteen(tmp_path):
    from emkd_lib.data import load_dataset
    from emkd_lib.data.registry import BUNDLED
    spec = BUNDLED["beauty-odmt"]
    assert (spec.min_length, spec.keep_recent, spec.features_from) == (6, 15, "beauty")
    folder = tmp_path / "beauty"
    folder.mkdir()
    lines = ["1 " + " ".join(str(i) for i in range(1, 21)), "2 1 2 3 4 5", "3 4 5 6 7 8 9"]
    (folder / "Beauty.txt").write_text("\n".join(lines) + "\n")
    (folder / "Beauty_item2attributes.json").write_text('{"1": [1]}')
    (folder / "Beauty_item_text.tsv").write_text("item_id\tasin\ttitle\n1\ta\tx\n")
    d = load_dataset("beauty-odmt", data_dir=tmp_path, allow_modified=True)
    assert d.user_ids.tolist() == [1, 3]
    assert [s.tolist() for s in d.sequences] == [list(range(6, 21)), [4, 5, 6, 7, 8, 9]]
    assert d.n_items == 20                       # the catalogue stays the full one's
    assert "Beauty_item_text.tsv" in d.files      # the texts are part of the run's identity


# ---- the method end to end ---------------------------------------------------

def toy_dataset(n_users=24, seed=0):
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(1, N_ITEMS + 1, size=int(rng.integers(6, 11))) for _ in range(n_users)]
    return SequenceDataset(name="toy", user_ids=np.arange(1, n_users + 1), sequences=seqs, n_items=N_ITEMS,
                           attributes=None, source="memory", files={})


def toy_config(method="odmt", **params):
    config = profile_config("smoke", "ml-100k-odmt", method)
    return config.replace(data__max_len=8, data__max_users=None, encoder_config__hidden=8, train__epochs=2,
                          **{f"params__{k}": v for k, v in params.items()})


@pytest.mark.parametrize("method,params", [("odmt", {}), ("sasrec-lf", {}), ("sasrec-ef", {}),
                                           *[("odmt", change) for change in TABLE3_ABLATIONS.values()]])
def test_every_variant_trains_and_scores_every_item(method, params):
    dataset = toy_dataset()
    seed_everything(0)
    model, recipe = build_with_features(toy_config(method, **params), dataset, synthetic_features())
    windows = torch.as_tensor(pad_left(recipe.make_examples([s[:-2] for s in dataset.sequences])[:8], 8))
    recipe.on_epoch_start(1)
    terms = recipe.loss(model, windows, None)
    # the terms each variant's name promises: one cross entropy and one distillation term per branch,
    # no ID branch without ID, no distillation terms in the single-loss fusions
    branches = ("text", "image") if params.get("use_id") is False else ("id", "text", "image")
    single_loss = method != "odmt" or params.get("fusion") == "late"
    expected = {"loss"} if single_loss else {"loss", *(f"{t}_{b}" for t in ("ce", "kl") for b in branches)}
    assert set(terms) == expected
    assert torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    scores = recipe.score(model, torch.as_tensor(pad_left([s[:-1] for s in dataset.sequences[:3]], 7)))
    assert scores.shape == (3, N_ITEMS + 1) and torch.isinf(scores[:, 0]).all()
    assert torch.isfinite(scores[:, 1:]).all()


def test_each_branchs_item_embedding_is_eq3_of_its_cls_token():
    """Eq. 3: D^k = W2^k LeakyReLU(W1^k E_cls + b1^k) + b2^k, with each branch's
    own weights, applied to the representation the tower hands its head."""
    seed_everything(0)
    model, _ = build_with_features(toy_config(), toy_dataset(), synthetic_features())
    model.eval()
    seen = {}
    for m, head in model.items.heads.items():
        head.register_forward_hook(lambda module, args, out, m=m: seen.__setitem__(m, (args[0], out)))
    tables = model.items(torch.arange(1, N_ITEMS + 1))
    assert set(seen) == {"id", "text", "image"}
    for m, (cls, out) in seen.items():
        first, second = model.items.heads[m][0], model.items.heads[m][2]
        direct = F.leaky_relu(cls @ first.weight.T + first.bias, 0.01) @ second.weight.T + second.bias
        torch.testing.assert_close(tables[m], direct)
        torch.testing.assert_close(out, direct)
    assert not torch.equal(model.items.heads["text"][0].weight, model.items.heads["image"][0].weight)


def test_each_branchs_user_tower_is_eq4_a_sasrec_over_its_own_item_embeddings():
    """Eq. 4: H^m = SASRec_m(S^m). Each branch's tower, given its item
    embeddings, computes what our SASRec encoder computes with those
    embeddings as its (sqrt(d)-scaled) item table and the tower's weights;
    H^m reads only branch m's embeddings, and the towers share no weights."""
    from emkd_lib.models.encoders import SASRec
    seed_everything(0)
    model, _ = build_with_features(toy_config(), toy_dataset(), synthetic_features())
    model.eval()
    tables = model.item_tables()
    ids = torch.as_tensor(pad_left([[3, 1, 4, 1, 5], [9, 2, 6], [5, 3, 5, 8, 9, 7, 9, 3]], 8))
    states = model.branch_states(ids, tables)
    assert set(states) == {"id", "text", "image"}
    hidden = tables["id"].shape[1]
    for m, tower in model.users.items():
        sasrec = SASRec(N_ITEMS, max_len=8, hidden=hidden, n_blocks=len(tower.blocks),
                        n_heads=tower.blocks[0].n_heads, dropout=0.0).eval()
        weights = dict(tower.state_dict())
        weights["item_embedding.weight"] = tables[m] / math.sqrt(hidden)
        sasrec.load_state_dict(weights)
        real = ids > 0
        torch.testing.assert_close(states[m][real], sasrec(ids)[real])
        # H^m does not move when another branch's item embeddings do
        others = {k: (v if k == m else torch.randn_like(v)) for k, v in tables.items()}
        torch.testing.assert_close(model.branch_states(ids, others)[m], states[m])
    assert not torch.equal(model.users["id"].blocks[0].qkv.weight, model.users["text"].blocks[0].qkv.weight)


@pytest.mark.parametrize("row", [r for r in TABLE3_ABLATIONS if r != "w/o Online Distillation"])
def test_each_table3_row_builds_the_model_its_name_describes(row):
    """The settings of each ablation reach the model: the tower's kind and
    depth, the ID mask (its item tables change with it), the ID branch and
    the table the ID embedding starts from."""
    change = TABLE3_ABLATIONS[row]
    params = {**dataclasses.asdict(ODMTParams()), **change}
    features = synthetic_features()
    seed_everything(0)
    model, _ = build_with_features(toy_config(**change), toy_dataset(), features)
    tower = model.items
    assert tower.joint == (params["item_tower"] == "imt") and tower.id_mask == params["id_mask"]
    assert len(tower.blocks if tower.joint else tower.text_blocks) == params["item_layers"]
    assert ("id" in model.branches) == params["use_id"]
    if params["use_id"]:
        start = {"concat": torch.cat([features.text_pooled, features.image_pooled], 1),
                 "text": features.text_pooled, "image": features.image_pooled}.get(params["id_init"])
        table = tower.id_embedding.weight.detach()[1:]
        if start is None:   # random: the concatenation's width, drawn, not copied
            assert table.shape[1] == D_T + D_V and not torch.equal(table[:, :D_T], features.text_pooled[1:])
        else:
            torch.testing.assert_close(table, start[1:].float())
    if tower.joint and params["use_id"]:   # the mask is used: without it the same weights give other tables
        model.eval()
        masked = tower.id_mask
        with_mask = model.item_tables()["text"].clone()
        tower.id_mask = not masked
        model.train(), model.eval()       # drop the cached tables
        assert not torch.allclose(with_mask, model.item_tables()["text"])


def _direct_eq5_losses(model, windows, log_pop):
    """Eq. 5-6 by loops, from the model's full item tables: per branch, each
    position's candidates are the batch's targets in position order, scored
    H . D - log pop(item), minus infinity for an item of the position's own
    window other than its own column; cross entropy, mean over positions."""
    tables = model.item_tables()
    states = model.branch_states(windows[:, :-1], tables)
    positions = [(b, t) for b in range(windows.shape[0]) for t in range(windows.shape[1] - 1) if windows[b, t] > 0]
    targets = [int(windows[b, t + 1]) for b, t in positions]
    logits = {}
    for m in states:
        rows = []
        for p, (b, t) in enumerate(positions):
            own = set(windows[b].tolist())
            rows.append(torch.stack([torch.tensor(-math.inf) if c != p and item in own
                                     else states[m][b, t] @ tables[m][item] - log_pop[item]
                                     for c, item in enumerate(targets)]))
        logits[m] = torch.stack(rows)
    labels = torch.arange(len(positions))
    fused = torch.stack(list(logits.values())).mean(0)
    return {m: F.cross_entropy(z, labels) for m, z in logits.items()}, F.cross_entropy(fused, labels), logits


def _masked_kl(p_logits, q_logits, T):
    """T^2 KL(p || q) per row, mean over rows; a candidate masked out (-inf)
    in both has p = 0 and adds nothing."""
    p, q = F.softmax(p_logits / T, -1), F.softmax(q_logits / T, -1)
    return T * T * torch.where(p > 0, p * (p.log() - q.log()), torch.zeros(())).sum(-1).mean()


def model_params(method):
    return toy_config(method).params


@pytest.mark.parametrize("method", ["odmt", "sasrec-lf", "sasrec-ef"])
def test_the_cross_entropy_terms_are_eq5_by_loops(method):
    dataset = toy_dataset()
    train = [s[:-2] for s in dataset.sequences]
    seed_everything(0)
    model, recipe = build_with_features(toy_config(method), dataset, synthetic_features())
    model.eval()  # no dropout, so the loops see the same model
    with torch.no_grad():   # at initialisation the branches nearly agree: KL ~1e-5, whatever T is
        for p in model.parameters():
            p.mul_(4)
    windows = torch.as_tensor(pad_left(recipe.make_examples(train)[:6], 8))
    recipe.on_epoch_start(1)                       # Eq. 10 at epoch 0: w = exp(-5), distillation already on
    terms = recipe.loss(model, windows, None)
    per_branch, fused, logits = _direct_eq5_losses(model, windows, training_log_popularity(train, N_ITEMS))
    if method == "odmt":
        for m, expected in per_branch.items():
            torch.testing.assert_close(terms[f"ce_{m}"], expected)
        # Eq. 9 from the loops' logits: the ID branch teaches text and image, the ensemble teaches ID.
        T = model_params(method).temperature
        ensemble = torch.stack(list(logits.values())).mean(0)
        kl = {m: _masked_kl(ensemble if m == "id" else logits["id"], z, T) for m, z in logits.items()}
        for m, expected in kl.items():
            assert expected > 0.05
            torch.testing.assert_close(terms[f"kl_{m}"], expected)
        w = rampup_weight(0, model_params(method).rampup_epochs)
        assert w == pytest.approx(math.exp(-5))
        torch.testing.assert_close(terms["loss"], sum(per_branch.values()) + w * sum(kl.values()))
    else:   # late fusion: one loss on the branches' mean logits; early: on one user tower's
        torch.testing.assert_close(terms["loss"], fused)
    if method == "sasrec-ef":   # whose item table is the mean of the branches' item embeddings
        assert set(logits) == {"fused"}
        tables = model.items(torch.arange(N_ITEMS + 1))
        torch.testing.assert_close(model.item_tables()["fused"],
                                   torch.stack([tables[m] for m in model.branches]).mean(0))


def test_loading_weights_in_eval_mode_drops_the_cached_item_tables():
    dataset = toy_dataset()
    seed_everything(0)
    model, _ = build_with_features(toy_config(), dataset, synthetic_features())
    seed_everything(1)
    other, _ = build_with_features(toy_config(), dataset, synthetic_features())
    model.eval(), other.eval()
    stale = model.item_tables()["id"].clone()
    model.load_state_dict(other.state_dict())     # as fit() restores the best epoch, in eval mode
    torch.testing.assert_close(model.item_tables()["id"], other.item_tables()["id"])
    assert not torch.equal(model.item_tables()["id"], stale)


def test_distill_total_is_ce_plus_rampup_times_kl():
    dataset = toy_dataset()
    seed_everything(0)
    model, recipe = build_with_features(toy_config(), dataset, synthetic_features())
    model.eval()  # no dropout: the same batch twice gives the same terms
    windows = torch.as_tensor(pad_left(recipe.make_examples([s[:-2] for s in dataset.sequences])[:8], 8))
    recipe.on_epoch_start(6)                       # epoch index 5 of Eq. 10
    terms = recipe.loss(model, windows, None)
    ce = terms["ce_id"] + terms["ce_text"] + terms["ce_image"]
    kl = terms["kl_id"] + terms["kl_text"] + terms["kl_image"]
    torch.testing.assert_close(terms["loss"], ce + rampup_weight(5, 20) * kl)


def test_independent_fusion_is_the_branches_ce_without_kl():
    """Table 4's "None": the same branches and inference, the distillation weight 0."""
    dataset = toy_dataset()
    windows = None
    totals = {}
    for fusion in ("independent", "distill"):
        seed_everything(0)
        model, recipe = build_with_features(toy_config(fusion=fusion), dataset, synthetic_features())
        model.eval()
        if windows is None:
            windows = torch.as_tensor(pad_left(recipe.make_examples([s[:-2] for s in dataset.sequences])[:8], 8))
        recipe.on_epoch_start(30)                  # past the ramp-up: w = 1
        terms = recipe.loss(model, windows, None)
        totals[fusion] = terms
    independent, distill = totals["independent"], totals["distill"]
    assert not any(k.startswith("kl_") for k in independent)
    torch.testing.assert_close(independent["loss"], independent["ce_id"] + independent["ce_text"]
                               + independent["ce_image"])
    for m in ("id", "text", "image"):              # same init, same batch: the same CE terms
        torch.testing.assert_close(independent[f"ce_{m}"], distill[f"ce_{m}"])
    assert distill["loss"] > independent["loss"] + 1e-6


@pytest.mark.parametrize("input_type", ["id", "text", "image"])
def test_single_input_has_one_branch_and_its_own_loss(input_type):
    dataset = toy_dataset()
    seed_everything(0)
    config = toy_config("sasrec-single", input=input_type)
    model, recipe = build_single_input_with_features(config, dataset, synthetic_features())
    assert model.branches == (input_type,)
    model.eval()
    windows = torch.as_tensor(pad_left(recipe.make_examples([s[:-2] for s in dataset.sequences])[:8], 8))
    terms = recipe.loss(model, windows, None)
    rows, labels, targets, excluded = in_batch_candidates(windows)
    tables = model.items(torch.arange(N_ITEMS + 1))[input_type]
    states = model.users[input_type](tables[windows[:, :-1]], windows[:, :-1])[rows]
    log_pop = odmt.training_log_popularity([s[:-2] for s in dataset.sequences], N_ITEMS)
    logits = losses.debiased_in_batch_logits(states, tables[targets], log_pop[targets], excluded)
    torch.testing.assert_close(terms["loss"], F.cross_entropy(logits, labels))
    terms["loss"].backward()
    used = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith(f"users.{input_type}") for n in used)
    if input_type == "id":                         # the features never reach an ID-only model
        assert not any("text" in n or "image" in n for n in used)


def test_single_input_id_scores_do_not_depend_on_the_features():
    dataset = toy_dataset()
    ids = torch.as_tensor(pad_left([s[:-1] for s in dataset.sequences[:3]], 7))
    scores = []
    for seed in (0, 1):
        seed_everything(0)
        model, recipe = build_single_input_with_features(toy_config("sasrec-single", input="id"), dataset,
                                                         synthetic_features(seed=seed))
        model.eval()
        scores.append(recipe.score(model, ids))
    torch.testing.assert_close(scores[0], scores[1])


def test_single_image_input_on_a_text_only_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="no images"):
        build_single_input_with_features(toy_config("sasrec-single", input="image"), toy_dataset(),
                                         synthetic_features(image=False))
    with pytest.raises(ValueError, match="input"):
        odmt.SingleInputParams(input="audio")


def test_scores_are_the_mean_of_the_branch_scores():
    dataset = toy_dataset()
    seed_everything(0)
    model, recipe = build_with_features(toy_config(), dataset, synthetic_features())
    model.eval()
    ids = torch.as_tensor(pad_left([s[:-1] for s in dataset.sequences[:2]], 7))
    tables = {m: model.items(torch.arange(N_ITEMS + 1))[m] for m in model.branches}
    expected = sum(model.users[m](tables[m][ids], ids)[:, -1] @ tables[m][1:].T for m in model.branches) / 3
    torch.testing.assert_close(recipe.score(model, ids)[:, 1:], expected)


def test_fit_learns_on_the_toy_data():
    dataset = toy_dataset(n_users=40)
    split = leave_one_out(dataset.sequences)
    config = toy_config().replace(train__epochs=8, train__batch_size=16, train__patience=8, train__lr=1e-2)
    seed_everything(0)
    model, recipe = build_with_features(config, dataset, synthetic_features())
    result = fit(model, recipe, split, config.train, seed=0, progress=False)
    ce = [h["ce_id"] + h["ce_text"] + h["ce_image"] for h in result.history]  # the KL weight ramps up
    assert ce[-1] < ce[0]
    assert len(result.test_ranks) == 40


def test_image_init_on_a_text_only_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="no image branch"):
        build_with_features(toy_config(id_init="image"), toy_dataset(), synthetic_features(image=False))


def test_params_reject_bad_values():
    with pytest.raises(ValueError, match="fusion"):
        ODMTParams(fusion="average")
    with pytest.raises(ValueError, match="temperature"):
        ODMTParams(temperature=0.0)
    assert odmt.LateFusionParams().fusion == "late" and odmt.EarlyFusionParams().item_tower == "separate"
    # SASRec+LF with ODMT's distillation would be ODMT under another name
    with pytest.raises(ValueError, match="fusion"):
        profile_config("cpu", "ml-100k-odmt", "sasrec-lf", params__fusion="distill")
    with pytest.raises(ValueError, match="fusion"):
        odmt.EarlyFusionParams(fusion="late")
    config = profile_config("cpu", "ml-100k-odmt", "sasrec-lf")
    assert isinstance(config.params, odmt.LateFusionParams)
    assert RunConfig.from_dict(config.to_dict()) == config


def test_item_spaces_are_stored_per_branch():
    dataset = toy_dataset()
    seed_everything(0)
    model, recipe = build_with_features(toy_config(), dataset, synthetic_features())
    arrays = recipe.analysis(model, None)
    assert set(arrays) == {"analysis_items_id", "analysis_items_text", "analysis_items_image"}
    tables = model.items(torch.arange(N_ITEMS + 1))
    for m in model.branches:
        np.testing.assert_allclose(arrays[f"analysis_items_{m}"].astype(np.float32), tables[m].detach().numpy(),
                                   atol=1e-2, rtol=1e-2)



def test_fdsa_fuses_an_item_and_a_feature_stream_and_trains():
    from emkd_lib.methods.odmt import build_fdsa_with_features
    dataset = toy_dataset()
    seed_everything(0)
    config = toy_config("fdsa")
    model, recipe = build_fdsa_with_features(config, dataset, synthetic_features())
    windows = torch.as_tensor(pad_left(recipe.make_examples([s[:-2] for s in dataset.sequences])[:8], 8))
    terms = recipe.loss(model, windows, None)
    assert set(terms) == {"loss"} and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert model.feature_stream.blocks[0].qkv.weight.grad.abs().sum() > 0   # the feature stream learns
    assert model.image_proj.weight.grad.abs().sum() > 0
    # the feature of an item is a convex combination of its projected text and image vectors
    items = torch.tensor([1, 2])
    tables = model.item_embeddings(items)
    f = model.features
    text, image = model.text_proj(f.text_pooled[items]), model.image_proj(f.image_pooled[items])
    w = torch.softmax(model.feature_attention(torch.stack([text, image], 1)), dim=1)
    torch.testing.assert_close(tables["features"], (w * torch.stack([text, image], 1)).sum(1))
    model.eval()
    ids = torch.as_tensor(pad_left([s[:-1] for s in dataset.sequences[:2]], 7))
    all_tables = model.item_tables()
    h = model.fuse(torch.cat([model.item_stream(all_tables["fdsa"][ids], ids),
                              model.feature_stream(all_tables["features"][ids], ids)], -1))[:, -1]
    torch.testing.assert_close(recipe.score(model, ids)[:, 1:], h @ all_tables["fdsa"][1:].T)


def test_table4_defaults_are_points_of_both_sweeps_and_the_full_odmt():
    from emkd_lib.studies.odmt import TABLE4, sensitivity_defaults, sensitivity_grid
    defaults = sensitivity_defaults("cpu", "ml-100k-odmt")
    grid = sensitivity_grid("cpu")
    full = profile_config("cpu", "ml-100k-odmt", "odmt")
    assert set(defaults) == set(TABLE4)
    for name, value in defaults.items():
        assert value in TABLE4[name] and grid[("ml-100k-odmt", name, value, 0)] == full


def test_rampup_found_places_the_selected_epoch_against_the_rampup():
    from types import SimpleNamespace
    from emkd_lib.studies.odmt import rampup_found

    def result(best, stop, method="odmt", **params):
        config = profile_config("cpu", "ml-100k-odmt", method, **{f"params__{k}": v for k, v in params.items()})
        return SimpleNamespace(config=config, best_epoch=best, history=[{}] * stop)

    after, first, during, early = rampup_found([result(60, 80), result(21, 30), result(17, 22), result(5, 19)])
    patience = profile_config("cpu", "ml-100k-odmt", "odmt").train.patience
    where = f"ml-100k-odmt / ODMT / seed 0 (alpha = 20, patience {patience})"
    # the loop's epoch e trains with Eq. 10's w(e - 1): w = 1 from the loop's epoch 21 on
    assert after == f"{where}: its selected epoch 60 came 39 epochs after the distillation weight reached 1 (in epoch 21)"
    assert first == f"{where}: its selected epoch 21 came 0 epochs after the distillation weight reached 1 (in epoch 21)"
    # epoch 17 of the loop is Eq. 10's epoch 16: w = exp(-5 (1 - 16/20)^2) = exp(-0.2)
    assert during == (f"{where}: its selected epoch 17 was trained with the distillation weight "
                      f"still ramping up (w = {math.exp(-0.2):.2f} in that epoch); the run stopped at epoch 22, 1 epoch "
                      "after the weight reached 1 (in epoch 21): it describes ODMT before its distillation reached full "
                      "weight")
    assert early.endswith("the run stopped at epoch 19, before the weight reached 1 (in epoch 21): it describes ODMT "
                          "before its distillation reached full weight")
    # no distillation, no ramp-up, or a baseline whose params derive from ODMT's: no line
    assert rampup_found([result(5, 10, fusion="independent"), result(5, 10, rampup_epochs=0),
                         result(5, 10, method="sasrec-lf")]) == []


def test_patience_check_is_the_main_odmt_run_with_only_its_patience_changed():
    from emkd_lib.studies.odmt import main_grid, patience_check_grid
    assert patience_check_grid("cpu", datasets=("ml-100k-odmt",)) == {}   # a chapter passes its own datasets
    ((key, check),) = patience_check_grid("cpu", datasets=("ml-100k-odmt", "beauty-odmt")).items()
    main = main_grid("cpu", datasets=("beauty-odmt",), methods=("odmt",))[("beauty-odmt", "odmt", 0)]
    assert key == ("beauty-odmt", "patience 10", 0)
    assert check.train.patience == 10 and main.train.patience == 5
    assert check.replace(train__patience=5) == main


def test_a_longer_patience_repeats_the_shorter_runs_epochs_and_replaces_it_in_table_2():
    from types import SimpleNamespace

    from emkd_lib.studies.patience import with_patience_checks
    dataset = toy_dataset(n_users=40)
    split = leave_one_out(dataset.sequences)
    fitted = {}
    for patience in (1, 4):
        # min_steps 0: stop on patience alone; lr high enough that validation does not rise every epoch
        config = toy_config().replace(train__epochs=10, train__batch_size=16, train__patience=patience,
                                      train__lr=5e-2, train__min_steps=0)
        seed_everything(0)
        model, recipe = build_with_features(config, dataset, synthetic_features())
        fitted[patience] = fit(model, recipe, split, config.train, seed=0, progress=False)
    short, long = fitted[1], fitted[4]
    assert len(short.history) < len(long.history)
    assert [h["valid_ndcg10"] for h in long.history[:len(short.history)]] == [h["valid_ndcg10"] for h in short.history]
    assert [h["loss"] for h in long.history[:len(short.history)]] == [h["loss"] for h in short.history]

    def stored(f):
        return SimpleNamespace(config=config, history=f.history, best_epoch=f.best_epoch,
                               provenance={"machine": "AMD EPYC x2 (torch threads 1)"})
    main, check = stored(short), stored(long)
    runs = {("d", "odmt", 0): main, ("d", "sasrec", 0): "untouched"}
    out, (line,) = with_patience_checks(runs, {("d", "patience 4", 0): check})
    assert out[("d", "odmt", 0)] is check and out[("d", "sasrec", 0)] == "untouched" and runs[("d", "odmt", 0)] is main
    assert line.startswith("d / ODMT / seed 0: ") and f"selects epoch {long.best_epoch}" in line
    # a check that did not repeat the main run's epochs is refused, and said so
    other = SimpleNamespace(config=config, history=[{**h, "loss": h["loss"] + 1} for h in long.history],
                            best_epoch=long.best_epoch, provenance=main.provenance)
    out, (line,) = with_patience_checks(runs, {("d", "patience 4", 0): other})
    assert out[("d", "odmt", 0)] is main and "does not repeat" in line


def test_shared_genre_rates_count_neighbours_sharing_a_genre_against_random_pairs(monkeypatch):
    from types import SimpleNamespace
    from emkd_lib import runs as runs_module
    from emkd_lib.data.containers import ItemAttributes
    from emkd_lib.studies.odmt import shared_genre_found, shared_genre_rates
    # items 1-4: 1 and 2 are comedies, 3 and 4 dramas, 3 also a comedy; item 5 only "unknown"
    genre_sets = {1: [2], 2: [2], 3: [2, 3], 4: [3], 5: [1]}
    indptr = np.cumsum([0, 0] + [len(genre_sets[i]) for i in range(1, 6)])
    attributes = ItemAttributes(indptr=indptr, indices=np.concatenate([genre_sets[i] for i in range(1, 6)]),
                                n_attributes=3, names=["genre_unknown", "Comedy", "Drama"])
    monkeypatch.setattr(runs_module, "run_data", lambda config: (SimpleNamespace(attributes=attributes), None))
    # "id": each item's nearest is its genre twin (1<->2, 3<->4); "text": 1<->4 and 2<->3 (2 and 3 share comedy)
    id_space = [[0, 0], [1, 0], [1, 0.1], [0, 1], [0.1, 1], [-1, -1]]
    text_space = [[0, 0], [1, 0], [0, 1], [0.1, 1], [1, 0.1], [-1, -1]]
    stored = {"analysis_items_id": np.array(id_space), "analysis_items_text": np.array(text_space)}
    result = SimpleNamespace(config=SimpleNamespace(dataset="d"), ranks=lambda: stored)
    rates, chance, n = shared_genre_rates(result, k=1)
    assert n == 4                                  # item 5 has only the unknown flag
    assert rates == {"id": 1.0, "text": 0.5}
    # pairs of items 1-4 sharing a genre: 1-2, 1-3, 2-3, 3-4 of the 6
    assert chance == pytest.approx(4 / 6)
    (line,) = shared_genre_found(result, k=1)
    assert line == ("d, over all 4 items with a genre (not only the gallery's queries): an item's 1 nearest items in "
                    "ODMT's item spaces share a genre with it in id 100.0%, text 50.0% of cases, against 66.7% for two items drawn at random: "
                    "not every space puts movies of a genre nearer each other than random pairs, the id space the "
                    "most, 50.0 percentage points above the least")
    assert shared_genre_found(SimpleNamespace(ranks=lambda: {})) == []


def test_no_distillation_run_is_table_4s_fusion_row_or_none():
    from emkd_lib.studies.odmt import no_distillation_run
    run = object()
    assert no_distillation_run({("d", "temperature", 0.1, 0): object(), ("d", "fusion", "independent", 0): run}) is run
    assert no_distillation_run({("d", "fusion", "independent", 0): None, ("d", "temperature", 0.1, 0): None}) is None
    assert no_distillation_run({}) is None


def test_quoted_dataset_table_is_odmts_table_1_with_density_in_percent_and_integer_counts():
    from emkd_lib.paper_tables import quoted_table
    from emkd_lib.studies.odmt import quoted_dataset_table
    table = quoted_dataset_table()
    quoted = quoted_table("ODMT", 1)
    first = quoted["dataset"].iloc[0]
    density = quoted[(quoted["dataset"] == first) & (quoted["metric"] == "Density")]["value"].iloc[0]
    assert table.loc[first, "Density (%)"] == pytest.approx(100 * density)
    assert "Density" not in table and all(str(table[c].dtype) == "Int64" for c in ("#Users", "#Items", "#Inter."))



@needs_dataset("ml-100k-odmt")
def test_the_quoted_dataset_table_has_our_dataset_tables_columns_in_their_order():
    """The chapter shows ours and the paper's one under the other."""
    from emkd_lib.studies.odmt import dataset_table, quoted_dataset_table
    ours = dataset_table(("ml-100k-odmt",))
    assert list(quoted_dataset_table().columns) == [c for c in ours.columns if c != "modalities"]
