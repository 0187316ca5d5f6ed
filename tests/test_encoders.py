import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emkd_lib.batching import pad_left
from emkd_lib.methods.baselines import (appended_mask_scores, cloze_loss, cloze_mask, last_position_scores,
                                        next_item_loss)
from emkd_lib.models.encoders import (ENCODER_CONFIGS, ENCODERS, CaserConfig, GRU4RecConfig, NextItNetConfig,
                                      TransformerConfig, build_encoder)

N_ITEMS, MAX_LEN = 30, 12


CONFIGS = {"sasrec": TransformerConfig(hidden=16, n_blocks=2, n_heads=2, dropout=0.0),
           "bert4rec": TransformerConfig(hidden=16, n_blocks=2, n_heads=2, dropout=0.0),
           "gru4rec": GRU4RecConfig(hidden=16, dropout=0.0),
           "caser": CaserConfig(hidden=16, window=3, dropout=0.0),
           "nextitnet": NextItNetConfig(hidden=16, kernel_size=2, n_dilations=2, dropout=0.0)}


def make(name, **kw):
    torch.manual_seed(0)
    model = build_encoder(name, N_ITEMS, MAX_LEN, CONFIGS[name], **kw)
    return model.eval()


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_shapes_and_logits_cover_real_items_only(name):
    model = make(name)
    ids = torch.tensor(pad_left([np.array([3, 4, 5]), np.array([1, 2, 3, 4, 5, 6])]))
    hidden = model(ids)
    assert hidden.shape == (2, 6, 16)
    assert model.logits(hidden).shape == (2, 6, N_ITEMS)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_extra_left_padding_changes_nothing(name):
    """A batch is cut to its own longest sequence, so the same sequence must get
    the same hidden states whatever the width of its batch."""
    model = make(name)
    seq = np.array([7, 3, 9, 4, 1])
    narrow = model(torch.tensor(pad_left([seq])))[0]
    wide = model(torch.tensor(pad_left([seq], length=10)))[0, -5:]
    torch.testing.assert_close(narrow, wide, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "caser", "nextitnet"])
def test_unidirectional_encoders_do_not_see_the_future(name):
    model = make(name)
    a = torch.tensor([[5, 6, 7, 8, 9]])
    b = a.clone()
    b[0, 3:] = torch.tensor([20, 21])
    torch.testing.assert_close(model(a)[0, :3], model(b)[0, :3])
    assert not torch.allclose(model(a)[0, 4], model(b)[0, 4])


def test_bert4rec_is_bidirectional():
    model = make("bert4rec")
    a = torch.tensor([[5, 6, 7, 8, 9]])
    b = a.clone()
    b[0, 4] = 20
    assert not torch.allclose(model(a)[0, 0], model(b)[0, 0])


def test_caser_sees_only_its_window():
    model = make("caser")  # window 3
    a = torch.tensor([[5, 6, 7, 8, 9, 10]])
    b = a.clone()
    b[0, 0] = 20  # outside the window of positions 3, 4, 5
    torch.testing.assert_close(model(a)[0, 3:], model(b)[0, 3:])
    assert not torch.allclose(model(a)[0, 2], model(b)[0, 2])


def test_nextitnet_receptive_field_is_the_sum_of_its_dilations():
    """Kernel 2, dilations r = 1, 2 with convolutions of dilation r and 2r: a
    position sees (2 - 1) * (1 + 2 + 2 + 4) = 9 items back, and no further."""
    model = make("nextitnet")
    a = torch.arange(1, 13)[None]                  # 12 items, positions 0..11
    for back, seen in ((9, True), (10, False)):
        b = a.clone()
        b[0, 11 - back] = 29
        changed = not torch.allclose(model(a)[0, 11], model(b)[0, 11])
        assert changed == seen, back


def test_nextitnet_residual_blocks_follow_the_paper():
    model = make("nextitnet")
    assert model.dilations == [1, 2]
    assert [(c1.dilation[0], c2.dilation[0]) for c1, c2 in model.convs] == [(1, 2), (2, 4)]
    stacked = build_encoder("nextitnet", N_ITEMS, MAX_LEN, NextItNetConfig(n_dilations=3, n_stacks=2))
    assert stacked.dilations == [1, 2, 4, 1, 2, 4]


def test_next_item_loss_matches_direct_cross_entropy():
    model = make("sasrec")
    windows = torch.tensor(pad_left([np.array([1, 2, 3, 4]), np.array([5, 6])]))
    loss = next_item_loss(model, windows)
    # direct: each unpadded window on its own, every position predicts the
    # next item with a softmax over all items
    terms = []
    for row in windows:
        seq = row[row > 0]
        hidden = model(seq[:-1][None])[0]
        for t in range(len(seq) - 1):
            terms.append(F.cross_entropy(model.logits(hidden[t])[None], (seq[t + 1] - 1)[None]))
    torch.testing.assert_close(loss, torch.stack(terms).mean(), atol=1e-5, rtol=1e-5)


def test_next_item_loss_weighs_windows_equally_when_asked():
    model = make("sasrec").eval()
    windows = torch.tensor(pad_left([np.array([1, 2, 3, 4, 5, 6]), np.array([5, 6]), np.array([7, 1, 2])]))
    per_window = []
    for row in windows:                      # direct: each window's mean, then the mean over windows
        seq = row[row > 0]
        hidden = model(seq[:-1][None])[0]
        per_window.append(F.cross_entropy(model.logits(hidden), seq[1:] - 1))
    equal = next_item_loss(model, windows, reduction="windows")
    torch.testing.assert_close(equal, torch.stack(per_window).mean(), atol=1e-5, rtol=1e-5)
    # the default weighs by predicted positions: 5, 1 and 2 of them here
    by_positions = sum(n * term for n, term in zip((5, 1, 2), per_window)) / 8
    torch.testing.assert_close(next_item_loss(model, windows), by_positions, atol=1e-5, rtol=1e-5)
    assert abs(equal.item() - by_positions.item()) > 1e-4
    same_length = windows[[0, 0]]            # in a batch of one length the two agree
    torch.testing.assert_close(next_item_loss(model, same_length, reduction="windows"),
                               next_item_loss(model, same_length), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="reduction must be one of"):
        next_item_loss(model, windows, reduction="users")


def test_cloze_mask_follows_bert_rule():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, N_ITEMS + 1, (4000, 20), generator=g)
    ids[:, :5] = 0  # padding
    masked, chosen = cloze_mask(ids, 0.15, N_ITEMS + 1, N_ITEMS, generator=g)
    assert not chosen[:, :5].any(), "padding must never be chosen"
    assert chosen.any(1).all(), "every sequence carries a loss"
    assert (masked[~chosen] == ids[~chosen]).all()
    rate = chosen[:, 5:].float().mean().item()
    assert 0.14 < rate < 0.17
    to_mask = (masked[chosen] == N_ITEMS + 1).float().mean().item()
    unchanged = (masked[chosen] == ids[chosen]).float().mean().item()
    assert 0.78 < to_mask < 0.82
    assert 0.09 < unchanged < 0.12  # 10% kept + random draws that hit the same item


def test_cloze_loss_only_at_chosen_positions():
    model = make("bert4rec")
    ids = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    loss = cloze_loss(model, ids, g1, 0.5)
    masked, chosen = cloze_mask(ids, 0.5, model.mask_token, N_ITEMS, g2)
    assert not chosen[ids == 0].any() and chosen.any(1).all()   # never padding; every row carries a loss
    log_probs = torch.log_softmax(model.logits(model(masked)), -1)    # (B, T, n_items): column i is item i + 1
    # by a loop: minus the log probability of each chosen position's original item, averaged over them
    terms = [-log_probs[b, t, int(ids[b, t]) - 1] for b in range(ids.shape[0]) for t in range(ids.shape[1])
             if chosen[b, t]]
    torch.testing.assert_close(loss, torch.stack(terms).mean())


def test_scorers_rank_all_items_and_never_padding():
    for name, scorer in (("sasrec", last_position_scores), ("bert4rec", appended_mask_scores)):
        model = make(name)
        scores = scorer(model, torch.tensor([[0, 1, 2], [3, 4, 5]]))
        assert scores.shape == (2, N_ITEMS + 1)
        assert torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown encoder 'transformer'"):
        build_encoder("transformer", 10, 5)


def test_every_encoder_has_a_typed_config():
    assert set(ENCODER_CONFIGS) == set(ENCODERS) == set(CONFIGS)
    for name in ENCODERS:  # the defaults build
        assert isinstance(build_encoder(name, 10, 5), ENCODERS[name])


def test_an_encoder_given_another_encoders_config_is_a_clear_error():
    with pytest.raises(TypeError, match="encoder 'gru4rec' takes a GRU4RecConfig, got TransformerConfig"):
        build_encoder("gru4rec", 10, 5, TransformerConfig())


@pytest.mark.parametrize("cls,kwargs,message", [
    (TransformerConfig, dict(hidden=10, n_heads=3), "hidden 10 is not divisible by n_heads 3"),
    (TransformerConfig, dict(hidden=64.0), "hidden must be int"),
    (GRU4RecConfig, dict(dropout=1.0), "dropout must be < 1"),
    (CaserConfig, dict(window=0), "window must be >= 1"),
])
def test_bad_encoder_configs_are_clear_errors(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_dropout_keeps_each_entry_with_probability_1_minus_p_scaled_and_backpropagates_through_its_mask():
    from emkd_lib.models.layers import Dropout
    torch.manual_seed(0)
    drop, x = Dropout(0.2), torch.full((400, 500), 3.0, requires_grad=True)
    y = drop(x)
    kept = y != 0
    # kept entries carry x / (1 - p); the share kept is 0.8 within 4 standard errors of 200,000 draws
    assert torch.allclose(y[kept], torch.full_like(y[kept], 3.0 / 0.8))
    assert abs(kept.float().mean().item() - 0.8) < 4 * (0.8 * 0.2 / kept.numel()) ** 0.5
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() / 0.8)
    torch.manual_seed(0)
    assert torch.equal(Dropout(0.2)(x.detach()), y.detach())  # the same seed draws the same mask
    assert torch.equal(drop.eval()(x), x) and torch.equal(Dropout(0.0)(x), x)
    assert torch.equal(Dropout(1.0)(x), torch.zeros_like(x))
    assert isinstance(drop, torch.nn.Dropout)  # same module interface, no parameters, same state dict
