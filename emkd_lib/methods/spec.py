"""The method interface: what the one training loop needs from a method.

A method is registered as a plain :class:`MethodSpec` in ``methods.METHODS``
(name -> spec); nothing dispatches on method-name strings. Its ``build``
turns a run config and a dataset into the model and a :class:`Recipe`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..flops import next_item_macs

# A batch's loss: named, unweighted terms for the history, plus "loss", the
# weighted total that is minimised. Terms switched off are absent.
LossTerms = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Recipe:
    """What the training loop needs to know about a method.

    ``make_examples``: training sequences -> training examples (windows).
    ``loss``: ``(model, padded batch (B, T), torch.Generator) -> LossTerms``.
    ``score``: ``(model, ids (B, T)) -> (B, n_items + 1)`` scores, column 0 = -inf.
    ``eval_max_len``: how many history items the scorer feeds the model.
    ``on_epoch_start``: optional hook called with the 1-based epoch before it
    runs, for methods with state across steps (ramp-ups, prototypes).
    ``analysis``: optional ``(model at its best epoch, split) -> arrays``
    stored with the result for the figures (``emkd_lib.analysis``).
    ``loss_units``: optional, padded batch -> how many terms its "loss" is the
    mean of (e.g. its loss-carrying positions). Only data-parallel training
    reads it (``distributed``): it weighs each process's share of a batch by
    it, so the averaged gradient is that of the whole batch's mean. None: rows.
    """

    make_examples: Callable[[list[np.ndarray]], list[np.ndarray]]
    loss: Callable[[nn.Module, torch.Tensor, torch.Generator], LossTerms]
    score: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    eval_max_len: int
    on_epoch_start: Callable[[int], None] | None = None
    analysis: Callable[[nn.Module, object], dict[str, np.ndarray]] | None = None
    loss_units: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass(frozen=True)
class MethodSpec:
    """A method as the registry knows it.

    ``params_type``: the typed dataclass of its hyperparameters.
    ``encoders``: the encoders it runs on, its default first.
    ``build``: ``(RunConfig, SequenceDataset) -> (model, Recipe)``.
    ``profile_defaults``: ``(profile, dataset name) -> dict`` of its changes
    to the profile's generic settings, keyed like ``RunConfig.replace``
    (``params__tau``, ``train__epochs``, ``data__max_len``, ...).
    ``display_name``: how the book names it (``"SASRec"``); default ``name``.
    ``label``: optional ``params -> str``, how tables name a run of it when
    its params say more than ``display_name``.
    ``forward_macs``: ``(RunConfig, n_items, n_attributes, window lengths)
    -> useful forward multiply-accumulates of a batch`` (``emkd_lib.flops``);
    the default counts its encoder and next-item scoring, a lower bound for
    a method with terms of its own.
    """

    name: str
    params_type: type
    encoders: tuple[str, ...]
    build: Callable
    profile_defaults: Callable[[str, str], dict]
    description: str = ""
    display_name: str = ""
    label: Callable[[object], str] | None = None
    forward_macs: Callable = next_item_macs

    @property
    def title(self) -> str:
        """The name the book prints: ``display_name``, else ``name``."""
        return self.display_name or self.name
