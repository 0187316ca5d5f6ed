"""CL4SRec: its NT-Xent loss against a loop, its terms and switches."""
import math

import numpy as np
import pytest
import torch

from emkd_lib import losses
from emkd_lib.batching import pad_left
from emkd_lib.config import DataConfig, RunConfig
from emkd_lib.data import SequenceDataset
from emkd_lib.methods import build_method
from emkd_lib.methods.baselines import next_item_loss
from emkd_lib.methods.cl4srec import CL4SRecParams, cl4srec_loss
from emkd_lib.models.encoders import TransformerConfig
from emkd_lib.profiles import profile_config


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_nt_xent_against_a_loop():
    B, D, tau = 4, 5, 0.7
    a, b = rand(B, D), rand(B, D, seed=1)
    z = torch.cat([a, b])
    expected = 0.0
    for i in range(2 * B):
        j = (i + B) % (2 * B)
        den = sum(math.exp((z[i] @ z[k]).item() / tau) for k in range(2 * B) if k != i)
        expected += -math.log(math.exp((z[i] @ z[j]).item() / tau) / den)
    assert math.isclose(losses.nt_xent_loss(a, b, tau).item(), expected / (2 * B), rel_tol=1e-10)


def dataset():
    seqs = [np.arange(1, n + 1) % 15 + 1 for n in (4, 6, 9, 12, 5, 7)]
    return SequenceDataset(name="toy", user_ids=np.arange(6), sequences=seqs, n_items=15, attributes=None,
                           source="synthetic")


def build(**params):
    cfg = RunConfig(dataset="toy", method="cl4srec", profile="cpu", params=CL4SRecParams(**params),
                    encoder_config=TransformerConfig(hidden=16, n_blocks=1, dropout=0.0), data=DataConfig(max_len=8))
    torch.manual_seed(0)
    return build_method(cfg, dataset())


def test_terms_and_switch():
    model, recipe = build()
    model.eval()
    windows = torch.from_numpy(pad_left(recipe.make_examples([s[:-2] for s in dataset().sequences])))
    terms = cl4srec_loss(model, windows, torch.Generator().manual_seed(0), CL4SRecParams())
    assert set(terms) == {"loss", "sr", "cl"}
    torch.testing.assert_close(terms["sr"], next_item_loss(model, windows))
    torch.testing.assert_close(terms["loss"], terms["sr"] + 0.1 * terms["cl"])
    off = cl4srec_loss(model, windows, torch.Generator().manual_seed(0), CL4SRecParams(cl=False))
    assert set(off) == {"loss", "sr"}
    torch.testing.assert_close(off["sr"], terms["sr"])
    assert CL4SRecParams(lam=0.0).active_terms() == set()


def test_the_contrastive_term_is_nt_xent_written_out_on_the_two_views():
    """``cl`` from separate forward passes of the two views (replayed from the
    same generator): for each of the 2B anchors, -log of its other view's
    e^{sim / tau} over the e^{sim / tau} of the 2B - 1 others, sim the dot
    product of last-position states (normalised when ``normalise``)."""
    from emkd_lib.augment import augment_batch
    from emkd_lib.methods.cl4srec import CL4SREC_OPERATORS
    model, recipe = build()
    model.eval()
    windows = torch.from_numpy(pad_left(recipe.make_examples([s[:-2] for s in dataset().sequences])))
    inputs = windows[:, :-1]
    for params in (CL4SRecParams(), CL4SRecParams(tau=0.5, normalise=True)):
        cl = cl4srec_loss(model, windows, torch.Generator().manual_seed(4), params)["cl"].item()
        views = augment_batch(inputs, torch.Generator().manual_seed(4), CL4SREC_OPERATORS, model.max_len,
                              mask_token=model.mask_token, gamma=params.mask_gamma, crop_delta=params.crop_delta,
                              crop_form=params.crop_form, reorder_delta=params.reorder_delta)
        with torch.no_grad():
            z = torch.cat([model(v)[:, -1] for v in views])                    # (2B, d): view 1, then view 2
        if params.normalise:
            z = torch.nn.functional.normalize(z, dim=-1)
        n = len(inputs)
        total = 0.0
        for a in range(2 * n):
            other_view = (a + n) % (2 * n)
            below = sum(math.exp(float(z[a] @ z[b]) / params.tau) for b in range(2 * n) if b != a)
            total += -math.log(math.exp(float(z[a] @ z[other_view]) / params.tau) / below)
        assert cl == pytest.approx(total / (2 * n), rel=1e-4)


def test_params_and_profiles():
    with pytest.raises(ValueError, match="unknown key"):
        profile_config("smoke", "beauty", "cl4srec", params__gamma=0.5)
    with pytest.raises(ValueError, match="crop_form"):
        CL4SRecParams(crop_form="middle")
    for profile in ("smoke", "cpu", "paper"):
        assert profile_config(profile, "beauty", "cl4srec").encoder == "sasrec"
    assert profile_config("paper", "beauty", "cl4srec").data.max_len == 50
    model, _ = build_method(profile_config("smoke", "beauty", "cl4srec"), dataset())
    assert model.encoder.item_embedding.num_embeddings == 15 + 2   # items, padding and [mask]
