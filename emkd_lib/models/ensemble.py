"""EMKD's N parallel BERT4Rec networks as one batched computation (Eq. 1-2, 4-5, 8-9).

Every network has its own parameters, exactly those of ``encoders.BERT4Rec``
(item and position embeddings, transformer blocks, final LayerNorm, projection
head and item bias), plus EMKD's linear attribute classifier (Eq. 9). Instead of
N modules run one after the other, each parameter is stored once, stacked along
a leading network axis: ``blocks.0.qkv.weight`` has shape ``(N, 3d, d)`` where
BERT4Rec's has ``(3d, d)``. The parameter names mirror BERT4Rec's, so
``from_modules`` and ``network`` are a stack and an index.

A forward pass runs all networks on the same ids with batched matmuls
(``torch.baddbmm``) and a single ``F.scaled_dot_product_attention`` call on an
``(N * B, heads, T, d_head)`` view: one kernel launch per layer for the whole
ensemble, which is what makes N networks cost little more than one big one.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import (BERT4Rec, attention_mask, build_encoder, encode_by_rows, is_cloze, positions_from_right,
                       run_blocks)
from .layers import Dropout


def average_logits(logits: torch.Tensor) -> torch.Tensor:
    """EMKD's Eq. 20, ensemble inference: ``(N, ..., n_items) -> (..., n_items)``,
    the mean of the N networks' logits. The one place an ensemble's score is
    formed, for stacked networks and for separately trained models alike, and
    for ODMT's branches (late fusion's score, Eq. 9's teacher z^e)."""
    return logits.mean(0)


class StackedLinear(nn.Module):
    """N independent ``nn.Linear(d_in, d_out)`` layers applied to ``(N, ..., d_in)``."""

    def __init__(self, n: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(n, d_out))
        nn.init.normal_(self.weight, std=0.02)  # encoders._init_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, *middle, d_in = x.shape
        out = torch.baddbmm(self.bias[:, None, :], x.reshape(n, -1, d_in), self.weight.transpose(1, 2))
        return out.view(n, *middle, -1)


class StackedLayerNorm(nn.Module):
    """N independent ``nn.LayerNorm(d)`` on ``(N, ..., d)``."""

    def __init__(self, n: int, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n, d))
        self.bias = nn.Parameter(torch.zeros(n, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        return torch.addcmul(self.bias.view(shape), F.layer_norm(x, x.shape[-1:], eps=self.eps),
                             self.weight.view(shape))


class StackedEmbedding(nn.Module):
    """N embedding tables ``(N, rows, d)``; the lookups live in ``EnsembleBERT4Rec``."""

    def __init__(self, n: int, rows: int, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, rows, d).normal_(std=0.02))


class StackedTransformerBlock(nn.Module):
    """``encoders.TransformerBlock`` for N networks at once, on ``(N, B, T, d)``."""

    def __init__(self, n: int, hidden: int, n_heads: int, dropout: float):
        super().__init__()
        if hidden % n_heads:
            raise ValueError(f"hidden={hidden} is not divisible by n_heads={n_heads}")
        self.n_heads, self.dropout = n_heads, dropout
        self.ln_attn = StackedLayerNorm(n, hidden)
        self.qkv = StackedLinear(n, hidden, 3 * hidden)
        self.proj = StackedLinear(n, hidden, hidden)
        self.ln_ffn = StackedLayerNorm(n, hidden)
        self.ffn_in = StackedLinear(n, hidden, 4 * hidden)
        self.ffn_out = StackedLinear(n, 4 * hidden, hidden)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """``attn_mask``: (N * B, 1, T, T), network-major like the ``(N * B)`` view."""
        N, B, T, d = x.shape
        h, dh = self.n_heads, d // self.n_heads
        q, k, v = self.qkv(self.ln_attn(x)).split(d, dim=-1)
        q, k, v = (t.reshape(N * B, T, h, dh).transpose(1, 2) for t in (q, k, v))
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(N, B, T, d)))
        return x + self.drop(self.ffn_out(self.drop(F.gelu(self.ffn_in(self.ln_ffn(x))))))


class EnsembleBERT4Rec(nn.Module):
    """N BERT4Rec networks f^1..f^N (Eq. 1-2) with separate parameters, run as one.

    ``forward(ids (B, T)) -> (N, B, T, d)``: every network encodes the same
    left-padded ids. ``logits((N, P, d)) -> (N, P, n_items)`` is each network's
    BERT4Rec output layer (Eq. 5) on its own hidden states;
    ``attribute_logits((N, P, d)) -> (N, P, n_attributes)`` its attribute
    classifier before the sigmoid (Eq. 9). Token ``n_items + 1`` is [mask].

    ``item_attributes`` (optional, ``(n_items + 1, n_attributes)`` 0/1) is kept
    as a non-persistent bool buffer: the targets of attribute prediction
    (Eq. 10's y), data rather than weights, so it stays out of the state dict.

    ``output_layer="linear"`` is Eq. 5 as printed, ``p = h W + b`` with a
    separate W per network, and ``scale_embeddings=False`` Eq. 1 as printed,
    ``v + p``; ``"bert4rec"`` and ``True`` are BERT4Rec's tied projection head
    and sqrt(d)-scaled embeddings, with which every network is exactly an
    ``encoders.BERT4Rec`` (``load_networks``, ``network``).
    """

    def __init__(self, n_networks: int, n_items: int, max_len: int, hidden: int = 64,
                 n_blocks: int = 2, n_heads: int = 1, dropout: float = 0.2,
                 item_attributes: torch.Tensor | None = None, output_layer: str = "bert4rec",
                 scale_embeddings: bool = True):
        super().__init__()
        if n_networks < 1:
            raise ValueError(f"n_networks must be >= 1, got {n_networks}")
        N = n_networks
        self.n_networks, self.n_items, self.max_len, self.hidden = N, n_items, max_len, hidden
        self.n_blocks, self.n_heads, self.dropout = n_blocks, n_heads, dropout
        self.item_embedding = StackedEmbedding(N, n_items + 2, hidden)  # + padding and [mask]
        self.position_embedding = StackedEmbedding(N, max_len, hidden)
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(StackedTransformerBlock(N, hidden, n_heads, dropout)
                                    for _ in range(n_blocks))
        self.ln_out = StackedLayerNorm(N, hidden)
        self.checkpoint_blocks, self.checkpoint_rows = False, None   # encoders.checkpoint_transformer_blocks
        if output_layer not in ("linear", "bert4rec"):
            raise ValueError(f"output_layer must be 'linear' or 'bert4rec', got {output_layer!r}")
        self.output_layer, self.scale_embeddings = output_layer, scale_embeddings
        if output_layer == "bert4rec":
            self.head = nn.Sequential(StackedLinear(N, hidden, hidden), nn.GELU(), StackedLayerNorm(N, hidden))
            self.output_bias = nn.Parameter(torch.zeros(N, n_items))
        else:
            self.output = StackedLinear(N, hidden, n_items)
        if item_attributes is not None:
            item_attributes = torch.as_tensor(item_attributes).bool()
            if item_attributes.shape[0] != n_items + 1:
                raise ValueError(f"item_attributes has {item_attributes.shape[0]} rows, "
                                 f"expected n_items + 1 = {n_items + 1}")
            self.attribute_head = StackedLinear(N, hidden, item_attributes.shape[1])
        else:
            self.attribute_head = None
        self.register_buffer("item_attributes", item_attributes, persistent=False)
        # Each network starts like a freshly built BERT4Rec (same initialisation
        # scheme), so differences to the baseline are the method's; a linear
        # output layer keeps its own init (N(0, 0.02), zero bias).
        self.load_networks([self._fresh_network() for _ in range(N)], strict=output_layer == "bert4rec")

    @property
    def mask_token(self) -> int:
        return self.n_items + 1

    @torch.no_grad()
    def share_block_initialisation(self) -> None:
        """Give every network's transformer blocks network 0's initial
        weights, as the public EMKD code does (its networks then differ only
        in embeddings, output layers and the masks' randomness)."""
        for parameter in self.blocks.parameters():
            parameter.copy_(parameter[:1].clone().expand_as(parameter))

    @property
    def n_attributes(self) -> int:
        return 0 if self.item_attributes is None else self.item_attributes.shape[1]

    # ---- conversion from and to separate BERT4Rec modules ------------------

    def _fresh_network(self) -> BERT4Rec:
        return BERT4Rec(self.n_items, self.max_len, self.hidden, self.n_blocks, self.n_heads, self.dropout)

    def _network_parameters(self) -> dict[str, nn.Parameter]:
        """The stacked parameters that mirror a BERT4Rec's (all but the attribute head)."""
        return {name: p for name, p in self.named_parameters() if not name.startswith("attribute_head.")}

    @torch.no_grad()
    def load_networks(self, modules: list[BERT4Rec], strict: bool = True) -> None:
        """Copy the weights of ``modules[n]`` into network n (``strict=False``:
        only the parameters both have, e.g. all but a linear output layer)."""
        if len(modules) != self.n_networks:
            raise ValueError(f"expected {self.n_networks} modules, got {len(modules)}")
        mine = self._network_parameters()
        for module in modules:
            theirs = dict(module.named_parameters())
            if strict and theirs.keys() != mine.keys():
                raise ValueError(f"module parameters {sorted(theirs.keys() ^ mine.keys())} do not match")
        shared = [name for name in mine if name in dict(modules[0].named_parameters())]
        for name in shared:
            mine[name].copy_(torch.stack([dict(m.named_parameters())[name] for m in modules]))

    @classmethod
    def from_modules(cls, modules: list[BERT4Rec],
                     item_attributes: torch.Tensor | None = None) -> "EnsembleBERT4Rec":
        """Stack N separately built BERT4Rec modules (same hyperparameters) into one ensemble."""
        first = modules[0]
        block = first.blocks[0]
        ensemble = cls(len(modules), first.n_items, first.max_len, first.hidden, len(first.blocks),
                       block.n_heads, block.dropout, item_attributes=item_attributes)
        ensemble.load_networks(modules)
        return ensemble.to(first.output_bias.device)

    def network(self, n: int) -> BERT4Rec:
        """Network n as a separate ``encoders.BERT4Rec`` (a copy of its weights)."""
        if self.output_layer != "bert4rec" or not self.scale_embeddings:
            raise ValueError("only an ensemble with BERT4Rec's output layer and scaled embeddings "
                             "splits into BERT4Recs")
        module = self._fresh_network().to(self.output_bias.device)
        module.load_state_dict({name: p[n].detach().clone() for name, p in self._network_parameters().items()})
        return module.train(self.training)

    # ---- computation ---------------------------------------------------------

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Eq. 1: ``(B, T)`` ids -> ``(N, B, T, d)`` item + position embeddings."""
        N, V = self.n_networks, self.n_items + 2
        # One lookup into the (N * V, d) table: network n's row of item i is
        # n * V + i. Padding goes to row 0 with padding_idx=0, so no network's
        # padding row is ever read with a gradient, like nn.Embedding(padding_idx=0).
        offsets = torch.arange(N, device=ids.device).view(N, 1, 1) * V
        flat = torch.where(ids > 0, ids + offsets, 0)
        items = F.embedding(flat, self.item_embedding.weight.view(N * V, -1), padding_idx=0)
        pos = positions_from_right(ids.shape[1], self.max_len, ids.device)
        scale = math.sqrt(self.hidden) if self.scale_embeddings else 1.0
        return items * scale + self.position_embedding.weight[:, None, pos]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Eq. 2: hidden states ``H^n`` of every network, ``(N, B, T, d)``."""
        return encode_by_rows(self._encode, ids, self.checkpoint_rows, dim=1)

    def _encode(self, ids: torch.Tensor) -> torch.Tensor:
        N = self.n_networks
        x = self.drop(self.embed(ids))
        mask = attention_mask(ids, causal=False).repeat(N, 1, 1, 1)  # (N * B, 1, T, T)
        return self.ln_out(run_blocks(self.blocks, x, mask, self.checkpoint_blocks))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Eq. 5 output layer: ``(N, ..., d) -> (N, ..., n_items)``, column j = item j + 1.

        Call it on the positions that need scores only (the masked ones): the
        (positions x catalogue) product is the largest matmul of training.
        """
        if self.output_layer == "linear":
            return self.output(hidden)
        N, *middle, d = hidden.shape
        items = self.item_embedding.weight[:, 1:self.n_items + 1]           # (N, n_items, d)
        out = torch.baddbmm(self.output_bias[:, None, :], self.head(hidden).reshape(N, -1, d),
                            items.transpose(1, 2))
        return out.view(N, *middle, self.n_items)

    def output_parts(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``logits`` as its pieces, for losses that form the logits
        themselves (``losses.chunked_item_losses``): ``(projected (N, P, d),
        weight (N, n_items, d), bias (N, n_items))`` with
        ``logits = projected @ weight^T + bias``."""
        if self.output_layer == "linear":
            return hidden, self.output.weight, self.output.bias
        return self.head(hidden), self.item_embedding.weight[:, 1:self.n_items + 1], self.output_bias

    def attribute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Eq. 9 before the sigmoid: ``(N, ..., d) -> (N, ..., n_attributes)``."""
        if self.attribute_head is None:
            raise RuntimeError("this ensemble was built without item attributes")
        return self.attribute_head(hidden)


class EncoderEnsemble(nn.Module):
    """N networks of a next-item encoder (GRU4Rec, Caser or SASRec) for EMKD on
    other encoders (the paper's Figure 4), with ``EnsembleBERT4Rec``'s interface:
    ``forward -> (N, B, T, d)``, ``logits``, ``attribute_logits``, ``mask_token``.

    Each network is the baseline encoder of ``encoders.py`` with one extra input
    row, the [mask] token ``n_items + 1`` of EMKD's views. The networks run one
    after the other: a GRU has no stacked form in PyTorch (``torch.vmap`` has no
    batching rule for it) and this variant is not the book's core method; the
    attribute classifiers are one stacked layer, as in ``EnsembleBERT4Rec``.
    """

    def __init__(self, encoder: str, n_networks: int, n_items: int, max_len: int, config=None,
                 item_attributes: torch.Tensor | None = None):
        super().__init__()
        if is_cloze(encoder):
            raise ValueError("EMKD on BERT4Rec is EnsembleBERT4Rec; EncoderEnsemble is for next-item encoders")
        if n_networks < 1:
            raise ValueError(f"n_networks must be >= 1, got {n_networks}")
        self.encoder, self.n_networks, self.n_items, self.max_len = encoder, n_networks, n_items, max_len
        self.networks = nn.ModuleList(build_encoder(encoder, n_items, max_len, config, n_extra_tokens=1)
                                      for _ in range(n_networks))
        self.hidden = self.networks[0].hidden
        if item_attributes is not None:
            item_attributes = torch.as_tensor(item_attributes).bool()
            if item_attributes.shape[0] != n_items + 1:
                raise ValueError(f"item_attributes has {item_attributes.shape[0]} rows, "
                                 f"expected n_items + 1 = {n_items + 1}")
            self.attribute_head = StackedLinear(n_networks, self.hidden, item_attributes.shape[1])
        else:
            self.attribute_head = None
        self.register_buffer("item_attributes", item_attributes, persistent=False)

    @property
    def mask_token(self) -> int:
        return self.n_items + 1

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.stack([network(ids) for network in self.networks])

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(N, ..., d) -> (N, ..., n_items)``: network n's output layer on its
        own states. One batched product over the stacked output layers, not N
        products stacked: the stack copied the (N, P, n_items) scores, the
        largest tensor of a step (the values are the loop's, bit for bit, at
        the sizes of a run: tests/test_emkd_encoders.py)."""
        weights, biases = zip(*(network.output_layer() for network in self.networks))
        flat = hidden.reshape(self.n_networks, -1, hidden.shape[-1])
        items = torch.stack(weights).transpose(1, 2)                    # (N, d, n_items)
        scores = (torch.bmm(flat, items) if biases[0] is None
                  else torch.baddbmm(torch.stack(biases)[:, None], flat, items))
        return scores.view(*hidden.shape[:-1], -1)

    def attribute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.attribute_head is None:
            raise RuntimeError("this ensemble was built without item attributes")
        return self.attribute_head(hidden)
