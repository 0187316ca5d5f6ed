"""The batched ensemble against separate BERT4Rec modules, and the EMKD recipe."""
import numpy as np
import pytest
import torch

import dataclasses

from emkd_lib import losses
from emkd_lib.batching import pad_left
from emkd_lib.config import DataConfig, RunConfig, TrainConfig
from emkd_lib.data import leave_one_out
from emkd_lib.methods import Recipe, build_method
from emkd_lib.methods.baselines import appended_mask_scores, cloze_mask, ensemble_scores
from emkd_lib.methods.emkd import (EMKDParams, emkd_loss, emkd_loss_terms, ensemble_appended_mask_scores)
from emkd_lib.models.encoders import BERT4Rec, TransformerConfig
from emkd_lib.models.ensemble import EnsembleBERT4Rec, average_logits
from emkd_lib.profiles import profile_config
from emkd_lib.typed import from_dict
from emkd_lib.train import fit

import helpers
from functools import partial

N_ITEMS, MAX_LEN, HIDDEN, N_NETS = 25, 10, 16, 3


def separate_modules(n=N_NETS, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return [BERT4Rec(N_ITEMS, MAX_LEN, HIDDEN, n_blocks=2, n_heads=2, dropout=dropout) for _ in range(n)]


def batch():
    return torch.tensor(pad_left([np.array([3, 4, 5]), np.array([1, 2, 3, 4, 5, 25, 7]),
                                  np.array([9, 9, 2, 25])]))


def attributes(seed=0):
    g = torch.Generator().manual_seed(seed)
    table = torch.rand(N_ITEMS + 1, 5, generator=g) < 0.4
    table[0] = False
    return table


# ---- the ensemble is N BERT4Rec networks -------------------------------------

def test_hidden_states_and_logits_equal_those_of_separate_modules():
    modules = separate_modules()
    ensemble = EnsembleBERT4Rec.from_modules(modules).eval()
    ids = batch()
    hidden = ensemble(ids)
    assert hidden.shape == (N_NETS, 3, ids.shape[1], HIDDEN)
    logits = ensemble.logits(hidden[:, ids > 0])
    for n, module in enumerate(modules):
        module.eval()
        h = module(ids)
        torch.testing.assert_close(hidden[n], h, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(logits[n], module.logits(h[ids > 0]), atol=1e-5, rtol=1e-5)


def test_gradients_of_every_parameter_equal_those_of_separate_modules():
    modules = separate_modules()
    ensemble = EnsembleBERT4Rec.from_modules(modules)
    ids = batch()
    g = torch.Generator().manual_seed(1)
    probe = torch.randn(N_NETS, *ids.shape, HIDDEN, generator=g)
    targets = torch.randint(0, N_ITEMS, (int((ids > 0).sum()),), generator=g)

    def objective(n, hidden, logits):  # touches every parameter, including the output layer
        return (hidden * probe[n]).sum() + torch.nn.functional.cross_entropy(logits, targets)

    hidden = ensemble(ids)
    logits = ensemble.logits(hidden[:, ids > 0])
    sum(objective(n, hidden[n], logits[n]) for n in range(N_NETS)).backward()
    for n, module in enumerate(modules):
        h = module(ids)
        objective(n, h, module.logits(h[ids > 0])).backward()
    stacked_names = set(name for name, _ in ensemble.named_parameters())
    assert stacked_names == set(name for name, _ in modules[0].named_parameters())
    for name, p in ensemble.named_parameters():
        expected = torch.stack([dict(m.named_parameters())[name].grad for m in modules])
        torch.testing.assert_close(p.grad, expected, atol=1e-5, rtol=1e-4, msg=name)
    assert (ensemble.item_embedding.weight.grad[:, 0] == 0).all()  # padding row, as padding_idx=0


def test_network_unstacks_exactly():
    modules = separate_modules()
    ensemble = EnsembleBERT4Rec.from_modules(modules)
    for n, module in enumerate(modules):
        theirs, mine = module.state_dict(), ensemble.network(n).state_dict()
        assert theirs.keys() == mine.keys()
        for key in theirs:
            torch.testing.assert_close(mine[key], theirs[key])


def test_networks_differ_at_initialisation_and_dropout_differs_per_network():
    torch.manual_seed(0)
    ensemble = EnsembleBERT4Rec(2, N_ITEMS, MAX_LEN, HIDDEN, n_blocks=1, n_heads=1, dropout=0.0)
    assert not torch.allclose(ensemble.blocks[0].qkv.weight[0], ensemble.blocks[0].qkv.weight[1])
    copies = EnsembleBERT4Rec.from_modules([ensemble.network(0)] * 2)
    copies.drop.p = 0.5
    hidden = copies.train()(batch())
    assert not torch.allclose(hidden[0], hidden[1])  # same weights, different dropout masks


def test_extra_left_padding_changes_nothing():
    ensemble = EnsembleBERT4Rec.from_modules(separate_modules()).eval()
    seq = np.array([7, 3, 9, 4, 1])
    narrow = ensemble(torch.tensor(pad_left([seq])))[:, 0]
    wide = ensemble(torch.tensor(pad_left([seq], length=MAX_LEN)))[:, 0, -5:]
    torch.testing.assert_close(narrow, wide, atol=1e-5, rtol=1e-5)


def test_ensemble_inference_is_the_mean_of_the_networks_appended_mask_logits():
    modules = separate_modules()
    ensemble = EnsembleBERT4Rec.from_modules(modules).eval()
    ids = batch()[:, -(MAX_LEN - 1):]
    scores = ensemble_appended_mask_scores(ensemble, ids)
    individual = torch.stack([appended_mask_scores(m.eval(), ids) for m in modules])
    assert scores.shape == (3, N_ITEMS + 1) and torch.isneginf(scores[:, 0]).all()
    torch.testing.assert_close(scores[:, 1:], individual[:, :, 1:].mean(0), atol=1e-5, rtol=1e-5)
    generic = ensemble_scores(modules, appended_mask_scores)(ids)
    torch.testing.assert_close(generic, scores, atol=1e-5, rtol=1e-5)


# ---- the EMKD recipe ---------------------------------------------------------

def tiny_ensemble(n=N_NETS, attrs=True):
    torch.manual_seed(0)
    return EnsembleBERT4Rec(n, N_ITEMS, MAX_LEN, HIDDEN, n_blocks=1, n_heads=2, dropout=0.0,
                            item_attributes=attributes() if attrs else None)


def grads_of(model, loss):
    model.zero_grad()
    loss.backward()
    return {name: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for name, p in model.named_parameters()}


def run_terms(model, params, seed=3):
    params = dataclasses.replace(params, mask_prob=0.3)
    return emkd_loss_terms(model, batch(), torch.Generator().manual_seed(seed), params)


def test_all_terms_are_present_and_one_forward_pass_serves_them():
    model = tiny_ensemble()
    calls = []
    forward = model.forward
    model.forward = lambda ids: calls.append(ids.shape) or forward(ids)
    params = EMKDParams(n_networks=N_NETS, n_views=2)
    terms = run_terms(model, params)
    assert set(terms) == {"mip", "ap", "icl", "ccl", "kd"}
    assert calls == [(3 * batch().shape[0], batch().shape[1])]  # originals + M views, one batch
    assert all(torch.isfinite(t) for t in terms.values())


def replay_views(ids, n_views, seed=3):
    """The views ``emkd_loss_terms`` draws from ``Generator().manual_seed(seed)``."""
    return cloze_mask(ids.repeat(n_views, 1), 0.3, N_ITEMS + 1, N_ITEMS, torch.Generator().manual_seed(seed))


def test_item_terms_are_view_means_summed_over_views_and_networks():
    """MIP (Eq. 5-7) and KD (Eq. 16-18) recomputed network by network and view
    by view with separate BERT4Rec modules fed the same views."""
    model, ids, M = tiny_ensemble(), batch(), 2
    params = EMKDParams(n_networks=N_NETS, n_views=M, kd_temperature=2.0)
    terms = run_terms(model, params)
    views, chosen = replay_views(ids, M)
    nets, B = [model.network(n).eval() for n in range(N_NETS)], ids.shape[0]
    mip = kd = 0.0
    for m in range(M):
        v, c = views[m * B:(m + 1) * B], chosen[m * B:(m + 1) * B]
        logits = [net.logits(net(v)[c]) for net in nets]
        for n in range(N_NETS):
            mip += torch.nn.functional.cross_entropy(logits[n], ids[c] - 1)
            for y in range(N_NETS):
                if y != n:  # KL(q^y || q^n): network n learns from y
                    kd += torch.nn.functional.kl_div(torch.log_softmax(logits[n] / 2.0, -1),
                                                     torch.log_softmax(logits[y] / 2.0, -1),
                                                     log_target=True, reduction="batchmean")
    torch.testing.assert_close(terms["mip"], mip, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(terms["kd"], kd, atol=1e-6, rtol=1e-4)


def test_contrastive_terms_see_whole_hidden_matrices_with_padding_zeroed(monkeypatch):
    model, ids, M = tiny_ensemble(), batch(), 2
    seen = {}
    real = losses.intra_network_contrastive_loss

    def spy(h_orig, h_views, *args, **kwargs):
        seen["orig"], seen["views"] = h_orig, h_views
        return real(h_orig, h_views, *args, **kwargs)

    monkeypatch.setattr(losses, "intra_network_contrastive_loss", spy)
    run_terms(model, EMKDParams(n_networks=N_NETS, n_views=M))
    views, _ = replay_views(ids, M)
    B, T = ids.shape
    for name, seqs, got in (("orig", ids, seen["orig"]), ("views", views, seen["views"].flatten(1, 2))):
        expected = model(seqs) * (seqs > 0)[..., None]              # dropout 0
        assert got.shape == (N_NETS, len(seqs), T * HIDDEN), name
        torch.testing.assert_close(got, expected.flatten(2), atol=1e-5, rtol=1e-5, msg=name)
    assert (seen["orig"].view(N_NETS, B, T, HIDDEN)[:, ids == 0] == 0).all()


SWITCHES = [
    ("icl", dict(icl=False), ["intra_network_contrastive_loss"]),
    ("ccl", dict(ccl=False), ["cross_network_contrastive_loss"]),
    ("kd", dict(kd=False), ["distillation_loss"]),
    ("ap", dict(ap=False), ["attribute_prediction_loss"]),
    ("icl+ccl", dict(lam=0.0), ["intra_network_contrastive_loss", "cross_network_contrastive_loss"]),
    ("kd", dict(mu=0.0), ["distillation_loss"]),
    ("independent", dict(icl=False, ccl=False, kd=False),
     ["intra_network_contrastive_loss", "cross_network_contrastive_loss", "distillation_loss"]),
]


@pytest.mark.parametrize("removed,switch,functions", SWITCHES)
def test_a_switched_off_term_is_not_computed_and_adds_no_gradient(removed, switch, functions, monkeypatch):
    model = tiny_ensemble()
    full = EMKDParams(n_networks=N_NETS, n_views=2, lam=0.1, mu=0.05, mask_prob=0.3)
    terms = run_terms(model, full)
    weight = {"mip": 1.0, "ap": 1.0, "icl": full.lam, "ccl": full.lam, "kd": full.mu}
    dropped = {"icl+ccl": ["icl", "ccl"], "independent": ["icl", "ccl", "kd"]}.get(removed, [removed])
    remaining = sum(weight[k] * v for k, v in terms.items() if k not in dropped)
    expected_grads = grads_of(model, remaining)

    for name in functions:
        monkeypatch.setattr(losses, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} was computed"))
    params = dataclasses.replace(full, **switch)
    out = emkd_loss(model, batch(), torch.Generator().manual_seed(3), params)
    assert set(out) == {"loss"} | set(terms) - set(dropped)
    assert params.active_terms(N_NETS, True) == set(terms) - set(dropped)
    loss = out["loss"]
    torch.testing.assert_close(loss, remaining)
    got = grads_of(model, loss)
    for name in got:
        torch.testing.assert_close(got[name], expected_grads[name], msg=name)


def test_no_attributes_means_no_attribute_term():
    model = tiny_ensemble(attrs=False)
    assert "ap" not in run_terms(model, EMKDParams(n_networks=N_NETS, n_views=2))
    assert model.attribute_head is None


def test_independent_training_keeps_networks_independent_and_kd_couples_them():
    """With ICL, CCL and KD off, network 0's gradient cannot depend on network 1."""
    def grad_of_network_0(params, perturb):
        model = tiny_ensemble(n=2)
        if perturb:
            with torch.no_grad():
                model.blocks[0].ffn_in.weight[1].add_(torch.randn_like(model.blocks[0].ffn_in.weight[1]))
        loss = emkd_loss(model, batch(), torch.Generator().manual_seed(3), params)["loss"]
        return grads_of(model, loss)["blocks.0.qkv.weight"][0]

    independent = EMKDParams(n_networks=2, n_views=2, icl=False, ccl=False, kd=False, mask_prob=0.3)
    torch.testing.assert_close(grad_of_network_0(independent, False), grad_of_network_0(independent, True))
    for coupled in (EMKDParams(n_networks=2, n_views=2, icl=False, ccl=False, mu=1.0, mask_prob=0.3),
                    EMKDParams(n_networks=2, n_views=2, icl=False, kd=False, lam=1.0, mask_prob=0.3)):
        assert not torch.allclose(grad_of_network_0(coupled, False), grad_of_network_0(coupled, True))


@pytest.mark.parametrize("last_view", [False, True])
def test_attribute_prediction_reads_the_original_sequence(last_view, monkeypatch):
    model = tiny_ensemble()
    seen = {}
    real = losses.attribute_prediction_loss

    def spy(logits, targets):
        seen["logits"], seen["targets"] = logits, targets
        return real(logits, targets)

    monkeypatch.setattr(losses, "attribute_prediction_loss", spy)
    ids = batch()
    params = EMKDParams(n_networks=N_NETS, n_views=2, ap_at_masked_positions_of_last_view=last_view, mask_prob=0.3)
    gen = torch.Generator().manual_seed(3)
    emkd_loss_terms(model, ids, gen, params)
    if last_view:  # replay the masking to know the last view's positions
        _, chosen = cloze_mask(ids.repeat(2, 1), 0.3, model.mask_token, N_ITEMS,
                                       torch.Generator().manual_seed(3))
        at = chosen[-ids.shape[0]:]
    else:
        at = ids > 0
    torch.testing.assert_close(seen["targets"], attributes()[ids[at]].float())
    hidden = model(ids)[:, at]  # dropout 0: the original sequence's hidden states
    # Eq. 8 before the sigmoid, network by network: h W'_n^T + b'_n
    head = model.attribute_head
    direct = torch.stack([hidden[n] @ head.weight[n].T + head.bias[n] for n in range(hidden.shape[0])])
    torch.testing.assert_close(seen["logits"], direct, atol=1e-5, rtol=1e-5)


# ---- configuration -----------------------------------------------------------

@pytest.mark.parametrize("params,message", [
    (dict(n_networks=0), "n_networks must be >= 1"),
    (dict(n_views=2.0), "n_views must be int"),
    (dict(tau=0.0), "tau must be > 0"),
    (dict(lam=-1.0), "lam must be >= 0"),
    (dict(mu="big"), "mu must be float"),
    (dict(kd_temperature=0), "kd_temperature must be > 0"),
    (dict(icl=0), "icl must be bool"),
    (dict(mask_prob=1.0), "mask_prob must be < 1"),
    (dict(contrastive_denominator="all"), "contrastive_denominator must be one of"),
])
def test_bad_emkd_params_are_clear_errors(params, message):
    with pytest.raises(ValueError, match="EMKDParams: " + message):
        EMKDParams(**params)
    with pytest.raises(ValueError, match="EMKDParams: " + message):
        profile_config("cpu", "beauty", "emkd").replace(**{f"params__{k}": v for k, v in params.items()})
    with pytest.raises(ValueError, match="EMKDParams: " + message):
        RunConfig.from_dict({"dataset": "beauty", "method": "emkd", "profile": "cpu", "params": params})


def test_unknown_emkd_params_name_the_allowed_ones():
    for make in (lambda: from_dict(EMKDParams, {"lambda": 0.1}),
                 lambda: profile_config("cpu", "beauty", "emkd", params__lambda=0.1),
                 lambda: RunConfig.from_dict({"dataset": "beauty", "method": "emkd", "profile": "cpu",
                                              "params": {"lambda": 0.1}})):
        with pytest.raises(ValueError, match=r"EMKDParams: unknown key\(s\) \['lambda'\]; allowed: .*'lam'"):
            make()


def test_profiles_build_valid_emkd_configs():
    paper = profile_config("paper", "ml-1m", "emkd")
    p = paper.params
    assert isinstance(p, EMKDParams) and paper.encoder == "bert4rec"
    e = paper.encoder_config
    assert (e.hidden, e.n_heads, paper.data.max_len, e.dropout, paper.data.window_step) == (256, 4, 40, 0.2, 10)
    assert (p.n_networks, p.n_views, p.tau, p.lam, p.mu, p.softmax_temperature) == (3, 8, 1.0, 0.01, 0.001, 1.0)
    cpu = profile_config("cpu", "beauty", "emkd")
    assert (cpu.encoder_config.hidden, cpu.data.max_len, cpu.data.window_step, cpu.train.batch_size,
            cpu.train.epochs, cpu.train.patience) == (64, 15, 1, 256, 200, 5)
    assert cpu.params.n_views == 2
    smoke = profile_config("smoke", "toys", "emkd")
    assert (smoke.encoder_config.hidden, smoke.encoder_config.n_blocks, smoke.data.max_users,
            smoke.params.n_networks) == (16, 1, 300, 2)
    assert RunConfig.from_dict(paper.to_dict()) == paper


def test_average_logits_is_the_mean_over_the_network_axis():
    logits = torch.arange(24.0).view(3, 2, 4)
    torch.testing.assert_close(average_logits(logits), (logits[0] + logits[1] + logits[2]) / 3)


# ---- learning ----------------------------------------------------------------

successor_dataset = partial(helpers.successor_dataset, n_attributes=3)


def test_build_method_gives_the_ensemble_and_its_recipe():
    dataset = successor_dataset()
    config = RunConfig(dataset="successor", method="emkd", profile="cpu", encoder="bert4rec",
                       encoder_config=TransformerConfig(hidden=16, n_blocks=1, n_heads=2),
                       params=EMKDParams(n_networks=2, n_views=2), data=DataConfig(max_len=10))
    model, recipe = build_method(config, dataset)
    assert isinstance(model, EnsembleBERT4Rec) and isinstance(recipe, Recipe)
    assert (model.n_networks, model.max_len, model.hidden, model.n_attributes) == (2, 10, 16, 3)
    assert recipe.eval_max_len == 9  # room for the appended [mask]
    assert torch.equal(model.item_attributes, torch.from_numpy(dataset.attributes.multi_hot(dtype=np.bool_)))
    no_ap, _ = build_method(config.replace(params__ap=False), dataset)
    assert no_ap.attribute_head is None


@pytest.mark.parametrize("setting", [{"output_layer": "bert4rec"}, {"scale_embeddings": True},
                                     {"shared_initialisation": True}, {"output_chunk": 8}])
def test_emkd_on_a_next_item_encoder_refuses_the_bert4rec_ensembles_settings(setting):
    config = RunConfig(dataset="successor", method="emkd", profile="cpu", encoder="sasrec",
                       encoder_config=TransformerConfig(hidden=16, n_blocks=1, n_heads=2),
                       params=EMKDParams(n_networks=2, n_views=2, **setting), data=DataConfig(max_len=10))
    (name,) = setting
    with pytest.raises(ValueError, match=rf"^EMKDParams\.{name} applies only to EMKD's BERT4Rec encoder, not to 'sasrec'$"):
        build_method(config, successor_dataset())
    build_method(config.replace(**{f"params__{name}": getattr(EMKDParams(), name)}), successor_dataset())


def test_emkd_learns_a_deterministic_successor():
    dataset = successor_dataset()
    split = leave_one_out(dataset.sequences)
    config = RunConfig(dataset="successor", method="emkd", profile="cpu", encoder="bert4rec",
                       encoder_config=TransformerConfig(hidden=32, n_blocks=1, n_heads=1, dropout=0.0),
                       params=EMKDParams(n_networks=2, n_views=2, tau=0.5, lam=0.1, mu=0.1, mask_prob=0.3),
                       data=DataConfig(max_len=10))
    torch.manual_seed(0)
    model, recipe = build_method(config, dataset)
    train = TrainConfig(epochs=25, batch_size=32, lr=5e-3, patience=25)
    result = fit(model, recipe, split, train, seed=0, device="cpu", progress=False)
    assert result.test_metrics["HR@5"] > 0.9
    assert result.history[-1]["loss"] < result.history[0]["loss"]


# ---- the public code's choices, each switchable ------------------------------

def test_unforced_masking_leaves_a_view_without_draws_unmasked():
    ids = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4]])
    generator = torch.Generator().manual_seed(0)
    masked, chosen = cloze_mask(ids, 1e-9, 99, 10, generator, force_one=False)
    assert not chosen.any() and torch.equal(masked, ids)
    masked, chosen = cloze_mask(ids, 1e-9, 99, 10, torch.Generator().manual_seed(0))
    assert chosen[:, -1].all() and chosen.sum() == 2


def test_the_printed_masking_rule_masks_every_selected_position_and_selects_as_bert_does():
    """Eq. 3 as printed: a selected position is always [mask]; BERT's rule
    (the default) also puts random items and unchanged items there. One seed
    selects the same positions under both, so the fidelity row differs from
    the default in the rule alone."""
    ids = torch.randint(1, 50, (64, 20), generator=torch.Generator().manual_seed(1))
    ids[:5, :7] = 0
    bert, chosen = cloze_mask(ids, 0.3, 99, 50, torch.Generator().manual_seed(2))
    printed, chosen_printed = cloze_mask(ids, 0.3, 99, 50, torch.Generator().manual_seed(2), rule="printed")
    assert torch.equal(chosen, chosen_printed) and chosen.sum() > 200
    assert (printed[chosen] == 99).all() and torch.equal(printed[~chosen], ids[~chosen])
    assert (bert[chosen] != 99).sum() > 10          # BERT's rule keeps or replaces about a fifth
    assert torch.equal(bert[~chosen], ids[~chosen])
    with pytest.raises(ValueError, match="rule must be one of"):
        cloze_mask(ids, 0.3, 99, 50, torch.Generator().manual_seed(2), rule="eq3")


def test_shared_initialisation_gives_every_network_the_same_blocks_only():
    model = EnsembleBERT4Rec(3, 20, 8, hidden=16, n_blocks=2, n_heads=2)
    assert not torch.equal(model.blocks[0].ffn_in.weight[0], model.blocks[0].ffn_in.weight[1])
    model.share_block_initialisation()
    for p in model.blocks.parameters():
        assert all(torch.equal(p[0], p[n]) for n in range(3))
    assert not torch.equal(model.item_embedding.weight[0], model.item_embedding.weight[1])


def test_the_linear_output_layer_is_eq_5_per_network():
    model = EnsembleBERT4Rec(2, 20, 8, hidden=16, n_blocks=1, n_heads=2, output_layer="linear",
                             scale_embeddings=False).eval()
    hidden = torch.randn(2, 5, 16)
    expected = torch.stack([hidden[n] @ model.output.weight[n].T + model.output.bias[n] for n in range(2)])
    torch.testing.assert_close(model.logits(hidden), expected)
    ids = torch.tensor([[0, 1, 2, 3]])
    pos = model.position_embedding.weight[:, None, torch.arange(4, 8)]
    torch.testing.assert_close(model.embed(ids)[:, :, 1:], (model.item_embedding.weight[:, None, ids[0, 1:]] + pos[:, :, 1:]))
    with pytest.raises(ValueError, match="splits into BERT4Recs"):
        model.network(0)


def test_the_emkd_defaults_are_the_printed_equations_and_the_code_set_switches_every_piece():
    from emkd_lib.methods.emkd import EMKD_CODE
    from emkd_lib.studies.emkd import fidelity_grid
    p = EMKDParams()
    assert (p.contrastive_denominator, p.positives_in_one_logsumexp, p.output_layer, p.scale_embeddings,
            p.force_a_masked_position, p.shared_initialisation) == ("negatives", False, "linear", False, True, False)
    assert p.mask_rule == "bert"        # the one departure from the printed equations, with the code
    printed = fidelity_grid("cpu")[("beauty", "Eq. 3 as printed: every selected position [mask]", 0)]
    assert printed.params == dataclasses.replace(fidelity_grid("cpu")[("beauty", "printed equations (default)", 0)].params,
                                                 mask_rule="printed")
    grid = fidelity_grid("cpu")
    base = grid[("beauty", "printed equations (default)", 0)]
    code = grid[("beauty", "public code (all its choices)", 0)]
    assert code.params.contrastive_denominator == "negatives-and-self" and code.train.grad_clip is None
    assert (base.train.batch_order, code.train.batch_order) == ("length-buckets", "shuffled")
    singles = [c for (d, row, s), c in grid.items() if row.startswith("code: ")]
    assert len(singles) == len(EMKD_CODE)
    for c in singles:  # each differs from the default in exactly one field
        diff = [k for part in ("params", "train") for k, v in vars(getattr(c, part)).items()
                if v != getattr(getattr(base, part), k)]
        assert len(diff) == 1


def _two_steps(make_model, checkpointed: bool):
    """Parameters, the global RNG state and the bytes saved for backward
    after two Adam steps of a cross-entropy loss on fixed ids."""
    from emkd_lib.models.encoders import checkpoint_transformer_blocks
    torch.manual_seed(0)
    model = make_model().train()
    if checkpointed:
        checkpoint_transformer_blocks(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    ids = torch.randint(1, 41, (4, 8), generator=torch.Generator().manual_seed(1))
    ids[0, :3] = 0
    saved = []
    for _ in range(2):
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                      lambda t: t):
            logits = model.logits(model(ids))
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 40), (ids.flatten() % 40).repeat(
                logits.numel() // (40 * ids.numel())))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()], torch.get_rng_state(), sum(saved)


@pytest.mark.parametrize("make_model", [
    lambda: EnsembleBERT4Rec(3, 40, 8, hidden=16, n_blocks=2, n_heads=2, dropout=0.3, output_layer="linear",
                             scale_embeddings=False),
    lambda: __import__("emkd_lib.models.encoders", fromlist=["SASRec"]).SASRec(40, 8, 16, 2, 2, 0.3)],
    ids=["emkd-ensemble", "sasrec"])
def test_activation_checkpointing_trains_bit_identically_and_saves_less(make_model):
    plain, plain_rng, plain_saved = _two_steps(make_model, checkpointed=False)
    ckpt, ckpt_rng, ckpt_saved = _two_steps(make_model, checkpointed=True)
    assert all(torch.equal(a, b) for a, b in zip(plain, ckpt))  # dropout replayed: the same masks
    assert torch.equal(plain_rng, ckpt_rng)                     # and the generator left where it was
    assert ckpt_saved < plain_saved / 2                          # the blocks' activations are not kept


def test_activation_checkpointing_is_a_config_option_that_needs_transformer_blocks():
    from emkd_lib.models.encoders import GRU4Rec, checkpoint_transformer_blocks
    config = profile_config("smoke", "beauty", "emkd", train__activation_checkpointing=True)
    assert config.identity()["train"]["activation_checkpointing"] is True
    assert "activation_checkpointing" not in profile_config("smoke", "beauty", "emkd").identity()["train"]
    model, _ = build_method(config, helpers.successor_dataset(n_attributes=3))
    assert model.checkpoint_blocks
    with pytest.raises(ValueError, match="activation_checkpointing: GRU4Rec has no transformer blocks"):
        checkpoint_transformer_blocks(GRU4Rec(40, 8))
    with pytest.raises(ValueError, match="activation_checkpointing"):
        profile_config("smoke", "beauty", "emkd", train__activation_checkpointing="yes")


@pytest.mark.parametrize("output_layer, symmetric_detached_kd",
                         [("linear", False), ("bert4rec", False), ("linear", True)])
def test_emkd_with_a_chunked_output_gives_the_same_terms_and_gradients(output_layer, symmetric_detached_kd):
    """``EMKDParams.output_chunk`` changes how the logits are held, not the
    loss: every term and every parameter's gradient as without it, with the
    printed distillation and with the public code's (each pair once,
    symmetric, teacher detached)."""
    dataset = helpers.successor_dataset(n_attributes=3)
    config = profile_config("smoke", "beauty", "emkd", params__output_layer=output_layer,
                            params__scale_embeddings=output_layer == "bert4rec",
                            params__kd_symmetric_detached_teacher=symmetric_detached_kd)
    ids = torch.tensor(pad_left([s[:6] for s in dataset.sequences[:8]], 6))
    results = []
    for chunk in (None, 7):
        torch.manual_seed(0)
        model, _ = build_method(config.replace(params__output_chunk=chunk), dataset)
        params = config.replace(params__output_chunk=chunk).params
        terms = emkd_loss_terms(model, ids, torch.Generator().manual_seed(3), params)
        loss = sum(terms.values())
        results.append((terms, torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)))
    (plain, plain_grads), (chunked, chunked_grads) = results
    assert plain.keys() == chunked.keys() and {"mip", "kd"} <= plain.keys()
    for name in plain:
        torch.testing.assert_close(chunked[name], plain[name])
    for a, b in zip(chunked_grads, plain_grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert "output_chunk" not in config.identity()["params"]
    assert config.replace(params__output_chunk=7).identity()["params"]["output_chunk"] == 7


@pytest.mark.parametrize("make_model", [
    lambda dropout: EnsembleBERT4Rec(3, 40, 8, hidden=16, n_blocks=2, n_heads=2, dropout=dropout,
                                     output_layer="linear", scale_embeddings=False),
    lambda dropout: __import__("emkd_lib.models.encoders", fromlist=["SASRec"]).SASRec(40, 8, 16, 2, 2, dropout)],
    ids=["emkd-ensemble", "sasrec"])
def test_checkpointing_by_rows_computes_the_same_function_and_is_deterministic(make_model):
    from emkd_lib.models.encoders import checkpoint_transformer_blocks

    def step(dropout, rows):
        torch.manual_seed(0)
        model = make_model(dropout).train()
        if rows:
            checkpoint_transformer_blocks(model, rows=rows)
        ids = torch.randint(1, 41, (7, 8), generator=torch.Generator().manual_seed(1))
        ids[0, :3] = 0
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                      lambda t: t):
            hidden = model(ids)
        grads = torch.autograd.grad(hidden.pow(2).sum(), list(model.parameters()), allow_unused=True)
        return hidden.detach(), [g for g in grads if g is not None], sum(saved)

    plain, plain_grads, plain_saved = step(0.0, None)
    chunked, chunked_grads, chunked_saved = step(0.0, 3)   # 7 sequences: chunks of 3, 3 and 1
    torch.testing.assert_close(chunked, plain)           # without dropout: the same function
    for a, b in zip(chunked_grads, plain_grads):
        torch.testing.assert_close(a, b)
    assert chunked_saved < plain_saved / 4
    first, second = step(0.3, 3), step(0.3, 3)
    assert torch.equal(first[0], second[0]) and all(torch.equal(a, b) for a, b in zip(first[1], second[1]))
    with pytest.raises(ValueError, match="checkpoint_rows needs activation_checkpointing=True"):
        TrainConfig(checkpoint_rows=4)


def test_masks_and_views_refuse_a_missing_generator():
    """A mask or an augmentation drawn from a global generator would depend on
    whatever drew before it; both ask for the run's generator instead."""
    from emkd_lib.augment import numpy_rng

    ids = torch.randint(1, 50, (4, 6), generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="not None"):
        cloze_mask(ids, 0.3, 99, 50, None)
    with pytest.raises(ValueError, match="not None"):
        numpy_rng(None)
