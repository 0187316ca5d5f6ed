"""Useful multiply-accumulates of a training step, counted analytically.

"Useful": the matmuls a method needs on the real tokens and the positions
that carry a loss, never on padding or positions nothing scores; elementwise
work (softmaxes, cross entropies, KD) is not counted. The throughput
benchmark divides them by a measured matmul peak (its share of peak), and
the study budget prices a run on a dataset where its method has not run yet
by them (``report.performance.epoch_work``): an epoch's cost grows with its
windows, their length (attention) and the catalogue (the output layer).
"""
from __future__ import annotations

import numpy as np

from .config import RunConfig


def _transformer_macs(ec, tokens: int, width: int) -> float:
    """Transformer blocks per real token: QKV and output projections (4 d^2),
    FFN (8 d^2), attention scores and weighted values (2 T d)."""
    d = ec.hidden
    return ec.n_blocks * tokens * (12 * d * d + 2 * width * d)


def _encoder_macs(encoder: str, ec, tokens: int, width: int) -> float:
    """One encoder's forward MACs over ``tokens`` real input tokens of a batch ``width`` wide."""
    d = ec.hidden
    if encoder in ("sasrec", "bert4rec"):
        return _transformer_macs(ec, tokens, width)
    if encoder == "gru4rec":  # three gates, input and recurrent matmuls: 6 d^2 per layer and token
        return ec.n_layers * tokens * 6 * d * d
    if encoder == "caser":
        L, n_h, n_v = ec.window, ec.n_horizontal, ec.n_vertical
        return tokens * (sum(h * d * n_h for h in range(1, L + 1)) + L * d * n_v + (n_h * L + n_v * d) * d)
    raise ValueError(encoder)


def forward_macs(config: RunConfig, n_items: int, n_attributes: int, lengths: np.ndarray) -> float:
    """Multiply-accumulates of one forward pass over a batch of training windows
    of ``lengths`` items (padding excluded: what the model needs, not what it runs).

    Scoring: d * n_items per position that carries a loss (plus BERT4Rec's
    d^2 projection head); cloze positions are the expected share
    ``mask_prob`` of tokens, at least one per window. EMKD: N networks on the
    original and its M views; item scores at the views' masked positions
    (BERT4Rec) or at every view position (next-item encoders), attribute
    prediction at every original token (or the last view's masked positions,
    ``ap_at_masked_positions_of_last_view``), and for ICL and CCL the cosine
    similarities of the flattened (T x d) hidden matrices: anchor-positive
    (M B) and anchor-bank (B B) per network (ICL) and per ordered pair of
    networks (CCL). KD and the cross entropies are elementwise (no matmul)
    and not counted.
    """
    ec, d = config.encoder_config, config.encoder_config.hidden
    B, width, tokens = len(lengths), int(lengths.max()), int(lengths.sum())
    next_item = config.encoder != "bert4rec"
    if next_item:  # next-item windows: input = w[:-1]
        width, tokens = width - 1, tokens - B
    if config.method != "emkd":  # a method not named here: its encoder and next-item scoring, a lower bound
        encoder = _encoder_macs(config.encoder, ec, tokens, width)
        if config.method == "bert4rec":
            masked = float(np.maximum(config.params.mask_prob * lengths, 1).sum())
            return encoder + masked * (d * d + d * n_items)
        return encoder + tokens * d * n_items
    p = config.params
    N, M = p.n_networks, p.n_views
    active = p.active_terms(N, n_attributes > 0)
    encoder = _encoder_macs(config.encoder, ec, tokens, width)
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
