"""Useful multiply-accumulates of a training step, counted analytically.

"Useful": the matmuls a method needs on the real tokens and the positions
that carry a loss, never on padding or positions nothing scores; elementwise
work (softmaxes, cross entropies, KD) is not counted. The throughput
benchmark divides them by a measured matmul peak (its share of peak), and
the study budget prices a run on a dataset where its method has not run yet
by them (``report.budget.epoch_work``): an epoch's cost grows with its
windows, their length (attention) and the catalogue (the output layer).

Each method's spec names its counter (``MethodSpec.forward_macs``, default
``next_item_macs``); every counter takes ``(config, n_items, n_attributes,
lengths)``, ``lengths`` the items of each training window of one batch.
"""
from __future__ import annotations

import numpy as np

from .config import RunConfig
from .models.encoders import CaserConfig, GRU4RecConfig, TransformerConfig, is_cloze


def _transformer_macs(ec: TransformerConfig, tokens: int, width: int) -> float:
    """Transformer blocks per real token: QKV and output projections (4 d^2),
    FFN (8 d^2), attention scores and weighted values (2 T d)."""
    d = ec.hidden
    return ec.n_blocks * tokens * (12 * d * d + 2 * width * d)


def _gru_macs(ec: GRU4RecConfig, tokens: int, width: int) -> float:
    """Three gates, input and recurrent matmuls: 6 d^2 per layer and token."""
    return ec.n_layers * tokens * 6 * ec.hidden * ec.hidden


def _caser_macs(ec: CaserConfig, tokens: int, width: int) -> float:
    """Horizontal filters of every height up to the window, vertical filters
    and the fully connected layer, per token."""
    d, L, n_h, n_v = ec.hidden, ec.window, ec.n_horizontal, ec.n_vertical
    return tokens * (sum(h * d * n_h for h in range(1, L + 1)) + L * d * n_v + (n_h * L + n_v * d) * d)


_ENCODER_MACS = {TransformerConfig: _transformer_macs, GRU4RecConfig: _gru_macs, CaserConfig: _caser_macs}


def encoder_macs(encoder_config, tokens: int, width: int) -> float:
    """One encoder's forward MACs over ``tokens`` real input tokens of a
    batch ``width`` wide, by the type of its config; ValueError for an
    encoder this module does not count (NextItNet)."""
    count = _ENCODER_MACS.get(type(encoder_config))
    if count is None:
        raise ValueError(f"the work of a {type(encoder_config).__name__} encoder is not counted")
    return count(encoder_config, tokens, width)


def _input_shape(config: RunConfig, lengths: np.ndarray) -> tuple[int, int, int]:
    """``(windows, width, tokens)`` of the encoder's input: a next-item
    window feeds all but its last item (its target)."""
    B, width, tokens = len(lengths), int(lengths.max()), int(lengths.sum())
    if not is_cloze(config.encoder):
        width, tokens = width - 1, tokens - B
    return B, width, tokens


def next_item_macs(config: RunConfig, n_items: int, n_attributes: int, lengths: np.ndarray) -> float:
    """The encoder, and every input position scored against the catalogue
    (d * n_items each). A method registered with this counter and terms of
    its own (a contrastive loss, a second view) gets a lower bound."""
    _, width, tokens = _input_shape(config, lengths)
    return encoder_macs(config.encoder_config, tokens, width) + tokens * config.encoder_config.hidden * n_items


def cloze_macs(config: RunConfig, n_items: int, n_attributes: int, lengths: np.ndarray) -> float:
    """BERT4Rec: the encoder, and the masked positions (the expected share
    ``mask_prob`` of tokens, at least one a window) through the d^2
    projection head and scored against the catalogue."""
    _, width, tokens = _input_shape(config, lengths)
    d = config.encoder_config.hidden
    masked = float(np.maximum(config.params.mask_prob * lengths, 1).sum())
    return encoder_macs(config.encoder_config, tokens, width) + masked * (d * d + d * n_items)


def emkd_macs(config: RunConfig, n_items: int, n_attributes: int, lengths: np.ndarray) -> float:
    """EMKD: N networks on the original and its M views; item scores at the
    views' masked positions (BERT4Rec, plus its d^2 head with the
    ``"bert4rec"`` output layer) or at every view position (next-item
    encoders), attribute prediction at every original token (or the last
    view's masked positions, ``ap_at_masked_positions_of_last_view``), and
    for ICL and CCL the cosine similarities of the flattened (T x d) hidden
    matrices: anchor-positive (M B) and anchor-bank (B B) per network (ICL)
    and per ordered pair of networks (CCL). KD and the cross entropies are
    elementwise (no matmul) and not counted."""
    B, width, tokens = _input_shape(config, lengths)
    p, d = config.params, config.encoder_config.hidden
    N, M = p.n_networks, p.n_views
    next_item = not is_cloze(config.encoder)
    active = p.active_terms(N, n_attributes > 0)
    encoder = encoder_macs(config.encoder_config, tokens, width)
    masked = float(np.maximum(p.mask_prob * lengths, 1).sum())
    if next_item:
        scoring = N * M * tokens * d * n_items
    else:
        head = d * d if p.output_layer == "bert4rec" else 0
        scoring = N * M * masked * (head + d * n_items)
    macs = N * (M + 1) * encoder + scoring
    if "ap" in active:
        ap_positions = masked / M if p.ap_at_masked_positions_of_last_view and not next_item else tokens
        macs += N * ap_positions * d * n_attributes
    D = width * d
    if "icl" in active:
        macs += N * (M * B + B * B) * D
    if "ccl" in active:
        macs += N * (N - 1) * (M * B + B * B) * D
    return macs


def forward_macs(config: RunConfig, n_items: int, n_attributes: int, lengths: np.ndarray) -> float:
    """Multiply-accumulates of one forward pass of ``config``'s method over a
    batch of training windows of ``lengths`` items (padding excluded: what
    the model needs, not what it runs), by the counter its spec registers."""
    from .methods import method_spec   # the specs name the counters of this module
    return method_spec(config.method).forward_macs(config, n_items, n_attributes, lengths)
