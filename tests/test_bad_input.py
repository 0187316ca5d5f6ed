"""Bad input to the library's small building blocks fails at once with one
line that names the problem (the data files' own errors: test_data.py and
test_data_validation.py; configs: test_config.py; the CLI: test_cli.py)."""
import re

import numpy as np
import pytest
import torch

from emkd_lib import augment, batching, clustering, evaluation, losses
from emkd_lib.methods.iclrec import sequence_representation
from emkd_lib.models.multimodal import ID_INITIALISATIONS

rng = np.random.default_rng(0)
z = torch.zeros
items = np.array([3, 1, 4, 1, 5])

CASES = {
    # augmentations (S^4Rec Sec. 3.2, CL4SRec)
    "a 2-D sequence": (lambda: augment.crop(np.ones((2, 2), dtype=np.int64), rng),
                       "an augmentation takes a 1-D item sequence, got shape (2, 2)"),
    "mask gamma above 1": (lambda: augment.mask(items, rng, 1.5, mask_token=9), "gamma must be in [0, 1], got 1.5"),
    "crop delta of 1": (lambda: augment.crop(items, rng, 1.0), "delta must be in [0, 1), got 1.0"),
    "unknown crop form": (lambda: augment.crop(items, rng, 0.5, form="middle"),
                          f"form must be one of {augment.CROP_FORMS}, got 'middle'"),
    "reorder delta above 1": (lambda: augment.reorder(items, rng, 1.2), "delta must be in [0, 1], got 1.2"),
    "negative insert rate": (lambda: augment.insert(items, rng, np.array([7]), rate=-0.1),
                             "rate must be >= 0, got -0.1"),
    "mask without its token": (lambda: augment.apply_operator("mask", items, rng), "mask needs a mask_token"),
    "insert without a pool": (lambda: augment.apply_operator("insert", items, rng), "insert needs an item pool"),
    "no operator": (lambda: augment.two_views(items, rng, operators=()), "two_views needs at least one operator"),
    # clustering (S^4Rec Eq. 9-11, ICLRec's K-means)
    "sinkhorn on a vector": (lambda: clustering.sinkhorn(torch.zeros(4)), "scores must be (B, K), got shape (4,)"),
    "sinkhorn epsilon 0": (lambda: clustering.sinkhorn(torch.zeros(4, 2), epsilon=0.0), "epsilon must be > 0, got 0.0"),
    "sinkhorn negative iterations": (lambda: clustering.sinkhorn(torch.zeros(4, 2), n_iters=-1),
                                     "n_iters must be >= 0, got -1"),
    "no clusters": (lambda: clustering.kmeans(np.zeros((4, 2)), 0, seed=0), "n_clusters must be >= 1, got 0"),
    # batching
    "batch size 0": (lambda: batching.length_bucketed_batches(np.array([3, 4]), 0), "batch_size must be positive, got 0"),
    "shuffle without a generator": (lambda: batching.length_bucketed_batches(np.array([3, 4]), 2, shuffle=True),
                                    "shuffle=True needs an explicit rng for reproducibility"),
    "unknown window rule": (lambda: batching.training_windows([items], "every", 3, 1),
                            "unknown window rule 'every'; known: sliding, tail"),
    "unknown batch order": (lambda: batching.training_batches(np.array([3, 4]), 2, "by-user", rng),
                            "batch order must be one of ('length-buckets', 'shuffled'), got 'by-user'"),
    # ICLRec's sequence representation, ODMT's ID table
    "unknown representation": (lambda: sequence_representation(z(1, 2, 3), torch.ones(1, 2).long(), "first"),
                               "representation must be one of ('mean', 'last'), got 'first'"),
    "ID table from missing images": (lambda: ID_INITIALISATIONS["image"](z(3, 4), None),
                                     "id_init='image' needs image features; this dataset has text only"),
    # evaluation (the ranks every metric is computed from)
    "scores as a vector": (lambda: evaluation.target_ranks(torch.zeros(5), torch.tensor([1])),
                           "scores must be (B, n_items + 1), got shape (5,)"),
    "targets and rows differ": (lambda: evaluation.target_ranks(torch.zeros(2, 5), torch.tensor([1, 2, 3])),
                                "3 targets for 2 score rows"),
    "history of another batch": (lambda: evaluation.target_ranks(torch.zeros(2, 5), torch.tensor([1, 2]),
                                                                 history=torch.zeros(3, 4, dtype=torch.long)),
                                 "history must be (B=2, T), got shape (3, 4)"),
    "history id out of range": (lambda: evaluation.target_ranks(torch.zeros(2, 5), torch.tensor([1, 2]),
                                                                history=torch.tensor([[0, 9], [1, 2]])),
                                "history ids must be in 0..4"),
    "ranks as a matrix": (lambda: evaluation.metrics_from_ranks(np.zeros((2, 2), dtype=np.int64)),
                          "ranks must be 1-D, got shape (2, 2)"),
    "no ranks": (lambda: evaluation.metrics_from_ranks(np.array([], dtype=np.int64)),
                 "ranks is empty: no users to average over"),
    "a negative rank": (lambda: evaluation.metrics_from_ranks(np.array([0, -1])),
                        "ranks must be non-negative (0-based)"),
    # losses: a mis-shaped argument would broadcast into a plausible wrong value
    "MIP weights for one position": (lambda: losses.masked_item_prediction_loss(z(2, 3, 5), torch.ones(3).long(),
                                                                              weights=torch.ones(1)),
                                     "masked_item_prediction_loss: weights has shape (1,), expected (3,)"),
    "MIP targets per network": (lambda: losses.masked_item_prediction_loss(z(2, 3, 5), torch.ones(2, 3).long()),
                                "masked_item_prediction_loss: targets has shape (2, 3), expected (3,)"),
    "AP targets of one position": (lambda: losses.attribute_prediction_loss(z(2, 5, 4), z(4)),
                                   "attribute_prediction_loss: targets has shape (4,), expected (5, 4)"),
    "KD weights too long": (lambda: losses.distillation_loss(z(2, 3, 5), 1.0, weights=torch.ones(4)),
                            "distillation_loss: weights has shape (4,), expected (3,)"),
    "fused output targets": (lambda: losses.chunked_item_losses(z(2, 3, 4), z(2, 5, 4), z(2, 5),
                                                                torch.ones(2).long(), None, 1.0),
                             "chunked_item_losses: targets has shape (2,), expected (3,)"),
    "Sinkhorn targets of one user": (lambda: losses.clustering_loss(z(6, 3), z(1, 3), 0.1),
                                     "clustering_loss: targets has shape (1, 3), expected (6, 3)"),
    "CKD teacher of another width": (lambda: losses.cluster_distillation_loss(z(4, 8), z(4, 6), 1.0),
                                     "cluster_distillation_loss: teacher has shape (4, 6), expected (4, 8)"),
    "head/tail labels per class": (lambda: losses.head_tail_adversarial_loss(z(4, 2), z(4, 2).long()),
                                   "head_tail_adversarial_loss: labels has shape (4, 2), expected (4,)"),
    "NT-Xent views of two batches": (lambda: losses.nt_xent_loss(z(4, 8), z(3, 8), 1.0),
                                     "nt_xent_loss: second has shape (3, 8), expected (4, 8)"),
    "ICLRec views of two batches": (lambda: losses.iclrec_nce_loss(z(4, 8), z(3, 8), 1.0),
                                    "iclrec_nce_loss: second has shape (3, 8), expected (4, 8)"),
    "one popularity for all candidates": (lambda: losses.debiased_in_batch_logits(z(3, 4), z(5, 4), z(1),
                                                                                  z(3, 5, dtype=torch.bool)),
                                          "debiased_in_batch_logits: log_pop has shape (1,), expected (5,)"),
    "exclusions of another batch": (lambda: losses.debiased_in_batch_logits(z(3, 4), z(5, 4), z(5),
                                                                            z(5, 5, dtype=torch.bool)),
                                    "debiased_in_batch_logits: excluded has shape (5, 5), expected (3, 5)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_naming_the_problem(case):
    call, message = CASES[case]
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()
