"""ODMT's towers (Ji et al., MM 2023, Section 3.2-3.3): items as ID, text
and image tokens, the ID-aware multi-modal transformer (IMT) that turns them
into one embedding per branch, and one SASRec user tower per branch.

Token layout of one item in the IMT (Eq. 2), ``n_v`` image patches and
``n_t`` text tokens:

    [ patch_1 .. patch_nv | image CLS | ID | text CLS | token_1 .. token_nt ]

Our extractors (``data.features``) give MiniLM's token states and their mean
(the model's sentence embedding) and EfficientNet's 7 x 7 feature map and its
mean; the means fill the two CLS slots, as the paper's ViT/BERT [CLS] states
would. The ID token may attend to every token; with ``id_mask`` no image or
text token may attend to the ID token (the paper's revised mask M~). Text
padding is hidden as a key. An item without a poster gets a learned
"missing image" vector in its image CLS slot and its patches are hidden.

Departures, all said in the chapter: the transformer blocks are the
library's pre-LayerNorm ones (the public code's are post-LN); the ID table
is initialised from the *concatenation* of the text and image vectors
(their widths differ here, 384 vs 1280, the case where the paper allows
"text, image or concatenated"); item embeddings are computed once per
distinct item of a batch, not once per occurrence.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .encoders import TransformerBlock, _init_weights, attention_mask, positions_from_right
from .layers import Dropout

@dataclass
class ItemFeatures:
    """Frozen extractor outputs as tensors, row ``i`` = item ``i`` (row 0 =
    padding, zeros). Plain tensors, not module buffers: the image patches of
    ML-100K alone are 200 MB, far too much to write into every checkpoint."""

    text_tokens: torch.Tensor            # (n + 1, n_t, d_t) float16
    text_mask: torch.Tensor              # (n + 1, n_t) bool, True = a real token
    text_pooled: torch.Tensor            # (n + 1, d_t)
    image_patches: torch.Tensor | None   # (n + 1, n_v, d_v)
    image_pooled: torch.Tensor | None    # (n + 1, d_v)
    image_present: torch.Tensor | None   # (n + 1,) bool

    @classmethod
    def from_feature_set(cls, features, n_items: int) -> "ItemFeatures":
        """From ``data.features.FeatureSet`` (row r = item r + 1), for items 1..n_items."""
        if features.n_items < n_items:
            raise ValueError(f"item features cover {features.n_items} items, the dataset has {n_items}")

        def rows(array, dtype=None):
            if array is None:
                return None
            a = np.asarray(array[:n_items])
            pad = np.zeros((1,) + a.shape[1:], dtype=a.dtype)
            return torch.from_numpy(np.concatenate([pad, a])).to(dtype) if dtype else \
                torch.from_numpy(np.concatenate([pad, a]))

        return cls(text_tokens=rows(features.text_tokens, torch.float16),
                   text_mask=rows(features.text_mask, torch.bool),
                   text_pooled=rows(features.text_pooled, torch.float32),
                   image_patches=rows(features.image_patches, torch.float16),
                   image_pooled=rows(features.image_pooled, torch.float32),
                   image_present=rows(features.image_present, torch.bool))

    @property
    def has_image(self) -> bool:
        return self.image_patches is not None

    def to(self, device) -> "ItemFeatures":
        return ItemFeatures(*(None if t is None else t.to(device) for t in (
            self.text_tokens, self.text_mask, self.text_pooled, self.image_patches, self.image_pooled,
            self.image_present)))


def imt_attention_mask(text_mask: torch.Tensor, image_present: torch.Tensor | None, n_patches: int,
                       with_id: bool, id_mask: bool) -> torch.Tensor:
    """The IMT's attention mask, Eq. 2: ``(N, 1, L, L)`` bool, True = the
    row's token may attend to the column's token.

    ``text_mask`` (N, n_t): real text tokens; ``image_present`` (N,) or None
    for a text-only dataset (then the layout has no image tokens). Hidden
    keys: text padding, and the patches of items without an image. With
    ``with_id`` and ``id_mask``, every token but the ID itself is kept from
    attending to the ID. Every token may attend to itself (no empty row).
    """
    N, n_t = text_mask.shape
    parts = []
    if image_present is not None:
        parts += [image_present[:, None].expand(N, n_patches), torch.ones(N, 1, dtype=torch.bool,
                                                                           device=text_mask.device)]
    if with_id:
        parts.append(torch.ones(N, 1, dtype=torch.bool, device=text_mask.device))
    parts += [torch.ones(N, 1, dtype=torch.bool, device=text_mask.device), text_mask]
    keys = torch.cat(parts, 1)                                   # (N, L)
    L = keys.shape[1]
    allowed = keys[:, None, None, :].expand(N, 1, L, L).clone()
    if with_id and id_mask:
        i = id_position(image_present is not None, n_patches)
        rows = torch.ones(L, dtype=torch.bool, device=text_mask.device)
        rows[i] = False
        allowed[:, :, rows, i] = False
    return allowed | torch.eye(L, dtype=torch.bool, device=text_mask.device)


def id_position(has_image: bool, n_patches: int) -> int:
    """Index of the ID token in the IMT layout."""
    return n_patches + 1 if has_image else 0


def _mlp(d: int) -> nn.Sequential:
    """Eq. 3: W2 LeakyReLU(W1 x + b1) + b2, one per branch."""
    return nn.Sequential(nn.Linear(d, d), nn.LeakyReLU(), nn.Linear(d, d))


def _text_and_image(text: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
    return text.clone() if image is None else torch.cat([text, image], 1)


def _text_only(text: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
    return text.clone()


def _image_only(text: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
    if image is None:
        raise ValueError("id_init='image' needs image features; this dataset has text only")
    return image.clone()


def _random_of_their_width(text: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
    width = text.shape[1] + (0 if image is None else image.shape[1])
    table = torch.empty(text.shape[0], width)
    nn.init.xavier_normal_(table)  # the public code's random variant
    return table


# How the ID table starts (``ItemTower``'s ``id_init``), from the items' pooled
# text (n, d_text) and image (n, d_image) vectors, the image None without images.
ID_INITIALISATIONS = {"concat": _text_and_image, "text": _text_only, "image": _image_only,
                      "random": _random_of_their_width}


class ItemTower(nn.Module):
    """Item embeddings D^m of each branch m (Eq. 1-3).

    ``joint=True``: the IMT, one transformer over all of an item's tokens.
    ``joint=False`` (the "w/o IMT" ablations, and SASRec+EF/LF's feature
    transformers): one transformer per modality over that modality's tokens
    alone; the ID branch is its projected embedding. ``id_init`` says how
    the ID table starts: "concat" (text and image vectors side by side, or
    text alone without images), "text", "image", "random".
    """

    def __init__(self, n_items: int, features: ItemFeatures, branches: tuple[str, ...], hidden: int,
                 n_layers: int, n_heads: int, dropout: float, joint: bool, id_mask: bool, id_init: str):
        super().__init__()
        self.features, self.branches, self.joint, self.id_mask = features, branches, joint, id_mask
        self.has_image = "image" in branches
        self.n_patches = features.image_patches.shape[1] if self.has_image else 0
        d_t = features.text_pooled.shape[1]
        self.text_proj = nn.Linear(d_t, hidden)
        if self.has_image:
            self.image_proj = nn.Linear(features.image_pooled.shape[1], hidden)
            self.missing_image = nn.Parameter(torch.zeros(hidden))
        if "id" in branches:
            init = self._id_init_table(id_init)
            self.id_embedding = nn.Embedding(n_items + 1, init.shape[1], padding_idx=0)
            self.id_proj = nn.Linear(init.shape[1], hidden)
        self.drop = Dropout(dropout)

        def stack():
            return nn.ModuleList(TransformerBlock(hidden, n_heads, dropout) for _ in range(n_layers))

        if joint:
            self.blocks = stack()
        else:
            self.text_blocks = stack()
            if self.has_image:
                self.image_blocks = stack()
        self.ln = nn.LayerNorm(hidden)
        self.heads = nn.ModuleDict({m: _mlp(hidden) for m in branches})
        self.apply(_init_weights)
        if "id" in branches:  # after _init_weights, which would overwrite it
            with torch.no_grad():
                self.id_embedding.weight.copy_(init)
                self.id_embedding.weight[0].zero_()

    def _id_init_table(self, id_init: str) -> torch.Tensor:
        if id_init not in ID_INITIALISATIONS:
            raise ValueError(f"unknown id_init {id_init!r}")
        f = self.features
        return ID_INITIALISATIONS[id_init](f.text_pooled.float(), f.image_pooled.float() if self.has_image else None)

    def _tokens(self, items: torch.Tensor):
        """Projected token sequences of ``items`` (N,): dict of (N, k, d) per modality."""
        f = self.features
        device = self.text_proj.weight.device
        if f.text_tokens.device != device:
            self.features = f = f.to(device)
        tokens = {"text": torch.cat([self.text_proj(f.text_pooled[items])[:, None],
                                     self.text_proj(f.text_tokens[items].float())], 1)}
        masks = {"text": torch.cat([torch.ones_like(items, dtype=torch.bool)[:, None], f.text_mask[items]], 1)}
        if self.has_image:
            present = f.image_present[items]
            cls = torch.where(present[:, None], self.image_proj(f.image_pooled[items]), self.missing_image)
            tokens["image"] = torch.cat([self.image_proj(f.image_patches[items].float()), cls[:, None]], 1)
            masks["image"] = torch.cat([present[:, None].expand(-1, self.n_patches),
                                        torch.ones_like(present)[:, None]], 1)
        if "id" in self.branches:
            tokens["id"] = self.id_proj(self.id_embedding(items))[:, None]
        return tokens, masks

    def forward(self, items: torch.Tensor) -> dict[str, torch.Tensor]:
        """``items`` (N,) ids -> {branch: D^branch (N, d)}."""
        tokens, masks = self._tokens(items)
        out = {}
        if self.joint:
            order = (["image"] if self.has_image else []) + (["id"] if "id" in self.branches else []) + ["text"]
            x = self.drop(torch.cat([tokens[m] for m in order], 1))
            present = self.features.image_present[items] if self.has_image else None
            mask = imt_attention_mask(self.features.text_mask[items], present, self.n_patches,
                                      with_id="id" in self.branches, id_mask=self.id_mask)
            for block in self.blocks:
                x = block(x, mask)
            x = self.ln(x)
            if self.has_image:
                out["image"] = x[:, self.n_patches]
            if "id" in self.branches:
                out["id"] = x[:, id_position(self.has_image, self.n_patches)]
            out["text"] = x[:, -tokens["text"].shape[1]]
        else:
            for m, blocks, cls in (("text", "text_blocks", 0), ("image", "image_blocks", -1)):
                if m not in tokens or m not in self.branches:
                    continue
                x, keys = self.drop(tokens[m]), masks[m]
                L = keys.shape[1]
                mask = keys[:, None, None, :] | torch.eye(L, dtype=torch.bool, device=keys.device)
                for block in getattr(self, blocks):
                    x = block(x, mask)
                out[m] = self.ln(x)[:, cls]
            if "id" in self.branches:
                out["id"] = tokens["id"][:, 0]
        return {m: self.heads[m](out[m]) for m in self.branches}


class UserTower(nn.Module):
    """SASRec over a sequence of item embeddings (Eq. 4): learned positions,
    causal pre-LN blocks, a final LayerNorm; ``(B, T, d) -> (B, T, d)``."""

    def __init__(self, max_len: int, hidden: int, n_blocks: int, n_heads: int, dropout: float):
        super().__init__()
        self.max_len = max_len
        self.position_embedding = nn.Embedding(max_len, hidden)
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(hidden, n_heads, dropout) for _ in range(n_blocks))
        self.ln_out = nn.LayerNorm(hidden)
        self.apply(_init_weights)

    def forward(self, item_embeddings: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        pos = positions_from_right(ids.shape[1], self.max_len, ids.device)
        x = self.drop(item_embeddings * (ids > 0)[..., None] + self.position_embedding(pos))
        mask = attention_mask(ids, causal=True)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_out(x)


class ItemTableCache:
    """Evaluation scores every item, so every item's embeddings (``item_tables``)
    are computed once per evaluation and dropped when the model trains again."""

    _item_tables: dict | None = None

    def train(self, mode: bool = True):
        self._item_tables = None  # the cached evaluation tables go stale once weights move
        return super().train(mode)

    def load_state_dict(self, *args, **kwargs):
        self._item_tables = None  # new weights: the cached tables belong to the old ones
        return super().load_state_dict(*args, **kwargs)

    @torch.no_grad()
    def item_tables(self, chunk: int = 512) -> dict[str, torch.Tensor]:
        """``item_embeddings`` of every item (rows 0..n), cached while in eval mode."""
        if self._item_tables is None or self.training:
            device = next(self.parameters()).device
            ids = torch.arange(self.n_items + 1, device=device)
            parts = [self.item_embeddings(ids[i:i + chunk]) for i in range(0, len(ids), chunk)]
            tables = {m: torch.cat([p[m] for p in parts]) for m in parts[0]}
            if self.training:
                return tables
            self._item_tables = tables
        return self._item_tables


class MultiModalRecommender(ItemTableCache, nn.Module):
    """The item tower, and one user tower per branch (late fusion and ODMT)
    or one over the branches' averaged item embeddings (early fusion)."""

    def __init__(self, n_items: int, max_len: int, features: ItemFeatures, branches: tuple[str, ...],
                 early_fusion: bool, hidden: int, n_blocks: int, n_heads: int, dropout: float,
                 item_layers: int, item_heads: int, joint: bool, id_mask: bool, id_init: str):
        super().__init__()
        self.n_items, self.branches, self.early_fusion = n_items, branches, early_fusion
        self.items = ItemTower(n_items, features, branches, hidden, item_layers, item_heads, dropout, joint,
                               id_mask, id_init)
        users = ("fused",) if early_fusion else branches
        self.users = nn.ModuleDict({m: UserTower(max_len, hidden, n_blocks, n_heads, dropout) for m in users})

    def item_embeddings(self, items: torch.Tensor) -> dict[str, torch.Tensor]:
        """{user tower: item embeddings (N, d)}: the branches', or their mean for early fusion."""
        tables = self.items(items)
        if self.early_fusion:
            return {"fused": torch.stack([tables[m] for m in self.branches]).mean(0)}
        return tables

    def branch_states(self, ids: torch.Tensor, tables: dict[str, torch.Tensor], inverse: torch.Tensor | None = None
                      ) -> dict[str, torch.Tensor]:
        """{user tower: H (B, T, d)} of ``ids`` (B, T); ``tables`` rows are
        items, or distinct items indexed by ``inverse`` (B, T)."""
        index = ids if inverse is None else inverse
        return {m: tower(tables[m][index], ids) for m, tower in self.users.items()}


class FDSARecommender(ItemTableCache, nn.Module):
    """FDSA (Zhang et al., IJCAI 2019) with content features, as ODMT's
    baseline: a self-attention stream over the items' ID embeddings and one
    over their feature vectors (each item's text and image vectors,
    projected and combined by vanilla attention, FDSA's feature
    aggregation), the two last states concatenated and mapped to d, scored
    against the ID embeddings. One user tower, named "fdsa"."""

    def __init__(self, n_items: int, max_len: int, features: ItemFeatures, use_image: bool, hidden: int,
                 n_blocks: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_items, self.features = n_items, features
        self.use_image = use_image and features.has_image
        self.id_embedding = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.text_proj = nn.Linear(features.text_pooled.shape[1], hidden)
        if self.use_image:
            self.image_proj = nn.Linear(features.image_pooled.shape[1], hidden)
        self.feature_attention = nn.Linear(hidden, 1)
        self.item_stream = UserTower(max_len, hidden, n_blocks, n_heads, dropout)
        self.feature_stream = UserTower(max_len, hidden, n_blocks, n_heads, dropout)
        self.fuse = nn.Linear(2 * hidden, hidden)
        self.apply(_init_weights)

    def item_embeddings(self, items: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"fdsa": ID embeddings (N, d), "features": aggregated feature vectors (N, d)}."""
        f = self.features
        if f.text_pooled.device != self.id_embedding.weight.device:
            self.features = f = f.to(self.id_embedding.weight.device)
        parts = [self.text_proj(f.text_pooled[items])]
        if self.use_image:
            image = self.image_proj(f.image_pooled[items])
            parts.append(torch.where(f.image_present[items][:, None], image, torch.zeros_like(image)))
        stacked = torch.stack(parts, 1)                                        # (N, F, d)
        weights = torch.softmax(self.feature_attention(stacked), dim=1)        # vanilla attention over features
        return {"fdsa": self.id_embedding(items), "features": (weights * stacked).sum(1)}

    def branch_states(self, ids: torch.Tensor, tables: dict[str, torch.Tensor], inverse: torch.Tensor | None = None
                      ) -> dict[str, torch.Tensor]:
        index = ids if inverse is None else inverse
        items = self.item_stream(tables["fdsa"][index], ids)
        feats = self.feature_stream(tables["features"][index], ids)
        return {"fdsa": self.fuse(torch.cat([items, feats], -1))}
