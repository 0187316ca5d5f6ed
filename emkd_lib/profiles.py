"""The three profiles: smoke (seconds, CI), cpu (the committed book, two
cores), paper (the papers' settings, a GPU).

``profile_config`` builds a run config in three layers: the profile's
generic settings, then the method's own changes (``MethodSpec.profile_defaults``),
then the caller's overrides (keyed like ``RunConfig.replace``).
"""
from __future__ import annotations

from .config import PROFILES, RunConfig
from .methods import method_spec

# cpu: full datasets, d = 64, epochs capped. ML-1M's long histories are cut
# into non-overlapping windows of 100 (the papers use 200) and its epochs
# capped at 15 (an epoch holds a million training targets). Early stopping
# waits for 1,500 optimizer steps before patience counts, so a method with
# few steps per epoch (BERT4Rec on ML-1M: ~50) is never stopped on the
# popularity plateau of its first epochs, whatever the dataset.
_GENERIC = {
    "smoke": {"encoder_config__hidden": 16, "data__max_len": 20, "data__max_users": 300,
              "train__batch_size": 128, "train__epochs": 2, "train__patience": 2},
    "cpu": {"encoder_config__hidden": 64, "train__epochs": 30, "train__patience": 3, "train__min_steps": 1500},
    "paper": {"encoder_config__hidden": 64, "train__epochs": 300, "train__patience": 20},
}
_PER_DATASET = {
    ("cpu", "ml-1m"): {"data__max_len": 100, "train__epochs": 15},
    ("paper", "ml-1m"): {"data__max_len": 200},
}
# Encoder settings that only some encoders have.
_TRANSFORMER = {("smoke", "n_blocks"): 1}
# Figure 4's EMKD on a next-item encoder, cpu profile: 20 epochs as EMKD.
EMKD_EPOCHS = {"cpu": 20}


def _generic(profile: str, dataset: str, encoder: str) -> dict:
    changes = {**_GENERIC[profile], **_PER_DATASET.get((profile, dataset), {})}
    if encoder in ("sasrec", "bert4rec"):
        changes.update({f"encoder_config__{k}": v for (p, k), v in _TRANSFORMER.items() if p == profile})
    if profile == "paper" and encoder in ("sasrec", "bert4rec"):
        changes["encoder_config__n_heads"] = 2
    return changes


def profile_config(profile: str, dataset: str, method: str, seed: int = 0, encoder: str | None = None,
                   **overrides) -> RunConfig:
    """The configuration of ``method`` (on ``encoder``, default its own) on
    ``dataset`` under ``profile``, with ``overrides`` applied last.

    EMKD on a next-item encoder (Figure 4) keeps that encoder's baseline
    settings (its windows, length and dropout) and takes EMKD's params of the
    profile.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {PROFILES}")
    spec = method_spec(method)
    encoder = encoder or spec.encoders[0]
    config = RunConfig(dataset=dataset, method=method, profile=profile, seed=seed, encoder=encoder)
    config = config.replace(**_generic(profile, dataset, encoder))
    own = spec.profile_defaults(profile, dataset)
    if encoder != spec.encoders[0]:
        baseline = method_spec(encoder).profile_defaults(profile, dataset)
        own = {**baseline, **{k: v for k, v in own.items() if k.startswith("params__")}}
        if profile in EMKD_EPOCHS:
            own["train__epochs"] = EMKD_EPOCHS[profile]
    return config.replace(**{**own, **overrides})
