"""Sequence encoders: SASRec, BERT4Rec, GRU4Rec, Caser and NextItNet.

Every encoder maps a LEFT-padded batch of item ids ``(B, T)`` (0 = padding,
the most recent item in the last column) to per-position hidden states
``(B, T, d)``, and scores hidden states against items with ``logits``, which
returns scores for the real items 1..n_items only (column j = item j + 1), so
that neither padding nor a [mask] token ever competes in a softmax.
``n_extra_tokens`` adds input-only rows after the items: BERT4Rec's [mask],
and the [mask] of EMKD's views when EMKD runs on a next-item encoder.

Scoring heads, as in each paper:
- SASRec, GRU4Rec: dot product with the shared input item embedding.
- BERT4Rec: a projection (Linear, GELU, LayerNorm) followed by the dot product
  with the shared input embedding plus an item bias.
- Caser, NextItNet: a separate output embedding plus bias (Caser's W' and
  b'; NextItNet's final softmax layer).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..typed import bound, check_fields
from .layers import Dropout


def positions_from_right(width: int, max_len: int, device) -> torch.Tensor:
    """Positional indices for a batch of ``width`` columns, counted so that the
    last column is always position ``max_len - 1``.

    Batches are cut to their own longest sequence; counting from the right keeps
    every item's position identical to the fixed-width left-padded layout of the
    original implementations.
    """
    if width > max_len:
        raise ValueError(f"batch width {width} exceeds max_len {max_len}")
    return torch.arange(max_len - width, max_len, device=device)


class _DotProductScores:
    """``logits`` of a next-item encoder: its hidden states times the item rows
    of its ``output_layer``, plus that layer's bias. An ensemble of such
    encoders scores all its networks in one batched product from their
    output layers (``ensemble.EncoderEnsemble.logits``)."""

    def output_layer(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The item rows ``(n_items, d)`` that ``logits`` scores against, and their bias or None."""
        raise NotImplementedError

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight, bias = self.output_layer()
        scores = hidden @ weight.T
        return scores if bias is None else scores + bias


class TransformerBlock(nn.Module):
    """Pre-LayerNorm self-attention block (attention + position-wise FFN)."""

    def __init__(self, hidden: int, n_heads: int, dropout: float, activation=F.gelu):
        super().__init__()
        if hidden % n_heads:
            raise ValueError(f"hidden={hidden} is not divisible by n_heads={n_heads}")
        self.n_heads, self.dropout, self.activation = n_heads, dropout, activation
        self.ln_attn = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ln_ffn = nn.LayerNorm(hidden)
        self.ffn_in = nn.Linear(hidden, 4 * hidden)
        self.ffn_out = nn.Linear(4 * hidden, hidden)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln_attn(x)).split(d, dim=-1)
        q, k, v = (t.view(B, T, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(B, T, d)))
        return x + self.drop(self.ffn_out(self.drop(self.activation(self.ffn_in(self.ln_ffn(x))))))


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, mask: torch.Tensor, checkpointed: bool = False
               ) -> torch.Tensor:
    """``x`` through each transformer block in turn.

    ``checkpointed`` (while autograd records): a block keeps only its input for
    the backward pass and recomputes its activations there
    (``torch.utils.checkpoint``, non-reentrant). The recomputation replays the
    random state, so dropout draws the same masks: outputs, gradients and the
    generator's state after the step are bit-identical, at the price of a second
    forward pass of the blocks. It trades time for the memory of the blocks'
    activations, the largest share of what a transformer step saves.
    """
    for block in blocks:
        if checkpointed and torch.is_grad_enabled():
            x = torch.utils.checkpoint.checkpoint(block, x, mask, use_reentrant=False)
        else:
            x = block(x, mask)
    return x


def encode_by_rows(encode, ids: torch.Tensor, rows: int | None, dim: int) -> torch.Tensor:
    """``encode(ids)``; with ``rows`` (while autograd records), ``encode`` on
    ``rows`` sequences at a time, each chunk checkpointed whole and its
    outputs joined along ``dim``. Sequences do not see each other in an
    encoder, so only the chunk's activations are ever live, in the forward
    pass and when the backward pass recomputes it; dropout draws its masks
    chunk by chunk, so the numbers are not those of one pass over the batch."""
    if rows is None or not torch.is_grad_enabled():
        return encode(ids)
    return torch.cat([torch.utils.checkpoint.checkpoint(encode, part, use_reentrant=False)
                      for part in ids.split(rows)], dim=dim)


def checkpoint_transformer_blocks(model: nn.Module, rows: int | None = None) -> nn.Module:
    """Switch on ``run_blocks``' checkpointing in every transformer encoder of
    ``model`` (``TrainConfig.activation_checkpointing``), or, with ``rows``,
    ``encode_by_rows``' (``TrainConfig.checkpoint_rows``); a model without a
    transformer encoder is an error rather than a silent no-op."""
    encoders = [m for m in model.modules() if hasattr(m, "checkpoint_blocks")]
    if not encoders:
        raise ValueError(f"activation_checkpointing: {type(model).__name__} has no transformer blocks to checkpoint")
    for encoder in encoders:
        encoder.checkpoint_blocks, encoder.checkpoint_rows = rows is None, rows
    return model


def attention_mask(ids: torch.Tensor, causal: bool) -> torch.Tensor:
    """Boolean mask (B, 1, T, T), True = may attend.

    Padding keys are hidden. Every position may attend to itself, so that rows
    of padding queries are never fully masked (which would make softmax NaN);
    their outputs are never read.
    """
    T = ids.shape[1]
    allowed = (ids > 0)[:, None, None, :]
    eye = torch.eye(T, dtype=torch.bool, device=ids.device)
    if causal:
        allowed = allowed & torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
    return allowed | eye


class _TransformerEncoder(nn.Module):
    causal: bool

    def __init__(self, n_items: int, max_len: int, hidden: int = 64, n_blocks: int = 2,
                 n_heads: int = 1, dropout: float = 0.2, n_extra_tokens: int = 0):
        super().__init__()
        self.n_items, self.max_len, self.hidden = n_items, max_len, hidden
        self.item_embedding = nn.Embedding(n_items + 1 + n_extra_tokens, hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, hidden)
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(hidden, n_heads, dropout) for _ in range(n_blocks))
        self.ln_out = nn.LayerNorm(hidden)
        self.checkpoint_blocks, self.checkpoint_rows = False, None   # checkpoint_transformer_blocks
        self.apply(_init_weights)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return encode_by_rows(self._encode, ids, self.checkpoint_rows, dim=0)

    def _encode(self, ids: torch.Tensor) -> torch.Tensor:
        pos = positions_from_right(ids.shape[1], self.max_len, ids.device)
        x = self.item_embedding(ids) * math.sqrt(self.hidden) + self.position_embedding(pos)
        x = self.drop(x)
        x = run_blocks(self.blocks, x, attention_mask(ids, self.causal), self.checkpoint_blocks)
        return self.ln_out(x)


class SASRec(_DotProductScores, _TransformerEncoder):
    """SASRec (Kang & McAuley, 2018): causal self-attention over the sequence."""

    causal = True
    cloze = False

    def output_layer(self) -> tuple[torch.Tensor, None]:
        return self.item_embedding.weight[1:self.n_items + 1], None


class BERT4Rec(_TransformerEncoder):
    """BERT4Rec (Sun et al., 2019): bidirectional self-attention trained by cloze.

    Token ``n_items + 1`` is [mask].
    """

    causal = False
    cloze = True   # trained by scoring masked positions, not the next item

    def __init__(self, n_items: int, max_len: int, hidden: int = 64, n_blocks: int = 2,
                 n_heads: int = 1, dropout: float = 0.2):
        super().__init__(n_items, max_len, hidden, n_blocks, n_heads, dropout, n_extra_tokens=1)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden))
        self.output_bias = nn.Parameter(torch.zeros(n_items))
        self.head.apply(_init_weights)

    @property
    def mask_token(self) -> int:
        return self.n_items + 1

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden) @ self.item_embedding.weight[1:self.n_items + 1].T + self.output_bias


class GRU4Rec(_DotProductScores, nn.Module):
    """GRU4Rec (Hidasi et al., 2016) with full-softmax cross entropy."""

    cloze = False

    causal = True

    def __init__(self, n_items: int, max_len: int, hidden: int = 64, n_layers: int = 1,
                 dropout: float = 0.2, n_extra_tokens: int = 0):
        super().__init__()
        self.n_items, self.max_len, self.hidden = n_items, max_len, hidden
        self.item_embedding = nn.Embedding(n_items + 1 + n_extra_tokens, hidden, padding_idx=0)
        self.drop = Dropout(dropout)
        self.gru = nn.GRU(hidden, hidden, num_layers=n_layers, batch_first=True)
        self.apply(_init_weights)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # A recurrent state must not run through left padding first, so each
        # row is rotated to right padding, where the pads come after every real
        # item and cannot influence it, and rotated back afterwards.
        B, T = ids.shape
        shift = T - (ids > 0).sum(1, keepdim=True)
        cols = torch.arange(T, device=ids.device)
        to_right = (cols + shift) % T
        out, _ = self.gru(self.drop(self.item_embedding(ids.gather(1, to_right))))
        to_left = (cols - shift) % T
        return out.gather(1, to_left[..., None].expand(B, T, self.hidden))

    def output_layer(self) -> tuple[torch.Tensor, None]:
        return self.item_embedding.weight[1:self.n_items + 1], None


class Caser(_DotProductScores, nn.Module):
    """Caser (Tang & Wang, 2018): horizontal and vertical convolutions over the
    last ``window`` items, computed for every position at once.

    Horizontal filters of height h slide over the (left-zero-padded) sequence;
    max-pooling over the ``window - h + 1`` outputs inside each position's
    window reproduces Caser's per-window max-pool. Vertical filters are learned
    weighted sums of the window's rows. Departure from the paper: no user
    embedding, so the model is user-agnostic like every other encoder here.
    """

    cloze = False

    causal = True

    def __init__(self, n_items: int, max_len: int, hidden: int = 64, window: int = 5,
                 n_horizontal: int = 16, n_vertical: int = 4, dropout: float = 0.2, n_extra_tokens: int = 0):
        super().__init__()
        self.n_items, self.max_len, self.hidden, self.window = n_items, max_len, hidden, window
        self.item_embedding = nn.Embedding(n_items + 1 + n_extra_tokens, hidden, padding_idx=0)
        self.horizontal = nn.ModuleList(
            nn.Conv1d(hidden, n_horizontal, kernel_size=h) for h in range(1, window + 1))
        self.vertical = nn.Parameter(torch.randn(n_vertical, window) / math.sqrt(window))
        self.fc = nn.Linear(n_horizontal * window + n_vertical * hidden, hidden)
        self.drop = Dropout(dropout)
        self.output_embedding = nn.Embedding(n_items + 1, hidden)
        self.output_bias = nn.Parameter(torch.zeros(n_items))
        self.apply(_init_weights)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        B, T = ids.shape
        L = self.window
        x = F.pad(self.item_embedding(ids), (0, 0, L - 1, 0))          # (B, T+L-1, d)
        xt = x.transpose(1, 2)                                          # (B, d, T+L-1)
        horizontal = [F.max_pool1d(F.relu(conv(xt)), kernel_size=L - h + 1, stride=1)
                      for h, conv in zip(range(1, L + 1), self.horizontal)]  # each (B, n_h, T)
        windows = x.unfold(1, L, 1)                                     # (B, T, d, L)
        vertical = torch.einsum("btdl,vl->btvd", windows, self.vertical).reshape(B, T, -1)
        features = torch.cat([torch.cat(horizontal, 1).transpose(1, 2), vertical], -1)
        return F.relu(self.fc(self.drop(features)))

    def output_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.output_embedding.weight[1:], self.output_bias


class NextItNet(_DotProductScores, nn.Module):
    """NextItNet (Yuan et al., 2019): stacked residual blocks of dilated causal
    1-D convolutions over the item embeddings, every position predicting the
    next item.

    Each residual block is two causal convolutions of width ``kernel_size``,
    the first with dilation r and the second with 2r, each followed by
    LayerNorm and ReLU, added to the block's input (the paper's Figure 3(b));
    r runs over 1, 2, 4, ... (``n_dilations`` of them), ``n_stacks`` times.
    Positions that are left padding are zeroed after the embedding and after
    every convolution, so that the amount of padding cannot reach a real position
    through the receptive field (the receptive field is not cut otherwise:
    a short window sees zeros where padding is, as in the paper's own left
    padding). Departure: dropout on the embeddings (the paper has none), the
    same rate as the other encoders here.
    """

    cloze = False

    causal = True

    def __init__(self, n_items: int, max_len: int, hidden: int = 64, kernel_size: int = 3, n_dilations: int = 3,
                 n_stacks: int = 1, dropout: float = 0.2, n_extra_tokens: int = 0):
        super().__init__()
        self.n_items, self.max_len, self.hidden = n_items, max_len, hidden
        self.item_embedding = nn.Embedding(n_items + 1 + n_extra_tokens, hidden, padding_idx=0)
        self.drop = Dropout(dropout)
        self.dilations = [2 ** i for i in range(n_dilations)] * n_stacks
        self.kernel_size = kernel_size
        self.convs = nn.ModuleList(nn.ModuleList([nn.Conv1d(hidden, hidden, kernel_size, dilation=r),
                                                  nn.Conv1d(hidden, hidden, kernel_size, dilation=2 * r)])
                                   for r in self.dilations)
        self.norms = nn.ModuleList(nn.ModuleList([nn.LayerNorm(hidden), nn.LayerNorm(hidden)])
                                   for _ in self.dilations)
        self.output_embedding = nn.Embedding(n_items + 1, hidden)
        self.output_bias = nn.Parameter(torch.zeros(n_items))
        self.apply(_init_weights)

    def _causal_conv(self, conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, T, d): position t sees t, t - r, t - 2r, ... only."""
        pad = (self.kernel_size - 1) * conv.dilation[0]
        return conv(F.pad(x.transpose(1, 2), (pad, 0))).transpose(1, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        real = (ids > 0)[..., None].to(self.item_embedding.weight.dtype)
        x = self.drop(self.item_embedding(ids)) * real
        for (first, second), (ln1, ln2) in zip(self.convs, self.norms):
            out = F.relu(ln1(self._causal_conv(first, x))) * real
            out = F.relu(ln2(self._causal_conv(second, out)))
            x = (x + out) * real
        return x

    def output_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.output_embedding.weight[1:], self.output_bias


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


# ---- typed configs: the hyperparameters each encoder takes, and only those ----

@dataclass(frozen=True)
class TransformerConfig:
    """SASRec and BERT4Rec."""

    hidden: int = bound(64, ge=1)
    n_blocks: int = bound(2, ge=1)
    n_heads: int = bound(1, ge=1)
    dropout: float = bound(0.2, ge=0, lt=1)

    def __post_init__(self):
        check_fields(self)
        if self.hidden % self.n_heads:
            raise ValueError(f"TransformerConfig: hidden {self.hidden} is not divisible by n_heads {self.n_heads}")


@dataclass(frozen=True)
class GRU4RecConfig:
    hidden: int = bound(64, ge=1)
    n_layers: int = bound(1, ge=1)
    dropout: float = bound(0.2, ge=0, lt=1)

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class CaserConfig:
    hidden: int = bound(64, ge=1)
    window: int = bound(5, ge=1)
    n_horizontal: int = bound(16, ge=1)
    n_vertical: int = bound(4, ge=1)
    dropout: float = bound(0.2, ge=0, lt=1)

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class NextItNetConfig:
    hidden: int = bound(64, ge=1)
    kernel_size: int = bound(3, ge=2)
    n_dilations: int = bound(3, ge=1)
    n_stacks: int = bound(1, ge=1)
    dropout: float = bound(0.2, ge=0, lt=1)

    def __post_init__(self):
        check_fields(self)


ENCODERS = {"sasrec": SASRec, "bert4rec": BERT4Rec, "gru4rec": GRU4Rec, "caser": Caser, "nextitnet": NextItNet}
ENCODER_CONFIGS = {"sasrec": TransformerConfig, "bert4rec": TransformerConfig, "gru4rec": GRU4RecConfig,
                   "caser": CaserConfig, "nextitnet": NextItNetConfig}


def build_encoder(name: str, n_items: int, max_len: int, config=None, n_extra_tokens: int = 0) -> nn.Module:
    """The encoder ``name`` with its typed ``config`` (default: the config's defaults)."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; known: {sorted(ENCODERS)}")
    config = config if config is not None else ENCODER_CONFIGS[name]()
    if not isinstance(config, ENCODER_CONFIGS[name]):
        raise TypeError(f"encoder {name!r} takes a {ENCODER_CONFIGS[name].__name__}, got {type(config).__name__}")
    extra = {"n_extra_tokens": n_extra_tokens} if n_extra_tokens else {}
    return ENCODERS[name](n_items=n_items, max_len=max_len, **asdict(config), **extra)


def is_cloze(encoder: str) -> bool:
    """Whether ``encoder`` trains by cloze (items scored at [mask] positions,
    BERT4Rec) rather than by predicting the next item at every position."""
    return ENCODERS[encoder].cloze
