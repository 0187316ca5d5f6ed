"""A run's configuration: what determines its result, typed and closed.

``RunConfig`` = dataset + method (+ its typed params) + encoder (+ its typed
config) + how it is trained (``TrainConfig``) + what data it sees
(``DataConfig``) + how it is evaluated (``EvalConfig``) + seed. Every
nested config rejects unknown keys and wrong types (``typed``). ``profile``
is a label (which preset produced the config): it names files but is not
part of the run's identity, which is the hash of everything else, the core
version and the checksums of the data files (``store.run_key``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .batching import BATCH_ORDERS, WINDOW_RULES
from .models.encoders import ENCODER_CONFIGS
from .typed import bound, check_fields, from_dict

PROFILES = ("smoke", "cpu", "paper")
HISTORY_EXCLUSION = ("all-but-target", "none")


@dataclass(frozen=True)
class TrainConfig:
    """The optimiser and when to stop.

    Early stopping counts *evaluations* (one per epoch) without improvement
    of validation NDCG@10, and only after ``min_steps`` optimizer steps: on a
    small dataset an epoch is a handful of steps, and counting epochs from
    the first one stopped models before they had left the popularity level.
    """

    epochs: int = bound(100, ge=1)
    batch_size: int = bound(256, ge=1)
    lr: float = bound(1e-3, gt=0)
    weight_decay: float = bound(0.0, ge=0)
    grad_clip: float | None = bound(5.0, gt=0)
    patience: int = bound(5, ge=1)
    min_steps: int = bound(0, ge=0)
    # "bf16": each loss's forward pass under bf16 autocast (weights, gradients
    # and Adam stay fp32; evaluation stays fp32). A speed lever where the
    # hardware has fast bf16 matmuls (benchmarks/train_throughput.py --autocast).
    precision: str = bound("fp32", choices=("fp32", "bf16"))
    # Recompute each transformer block's activations in the backward pass
    # instead of keeping them (models.encoders.run_blocks): the same numbers,
    # a fraction of the memory, about one more forward pass of time. For the
    # paper profile on a small machine.
    activation_checkpointing: bool = False
    # With activation_checkpointing: the encoder runs this many sequences at
    # a time, each chunk recomputed whole in the backward pass
    # (models.encoders.encode_by_rows), so one chunk's activations are live
    # instead of one block's for the whole batch. Dropout then draws its
    # masks chunk by chunk: deterministic, but not the unchunked numbers.
    checkpoint_rows: int | None = bound(None, ge=1)
    # How an epoch is cut into batches (batching.BATCH_ORDERS): length
    # buckets spend nothing on padding; "shuffled" mixes lengths in a batch,
    # as the papers' public code does (in-batch negatives of every length).
    batch_order: str = bound("length-buckets", choices=tuple(BATCH_ORDERS))

    def __post_init__(self):
        check_fields(self)
        if self.checkpoint_rows is not None and not self.activation_checkpointing:
            raise ValueError("TrainConfig: checkpoint_rows needs activation_checkpointing=True")


@dataclass(frozen=True)
class DataConfig:
    """Which users and training windows a run sees.

    ``windows="sliding"``: windows end every ``window_step`` items from the
    end of each sequence down to two items (``None``: ``max_len - 1``, every
    target once an epoch; 1: every prefix). ``windows="tail"``: only
    full-length windows, cut from the end every ``window_step`` items, and one
    window of the whole sequence for users shorter than that (the public
    EMKD code's rule). ``max_users``: a fixed subsample (the same users for
    every seed). ``on_short="skip"`` drops users with fewer than three items.
    """

    max_len: int = bound(50, ge=1)
    windows: str = bound("sliding", choices=tuple(WINDOW_RULES))
    window_step: int | None = bound(None, ge=1)
    max_users: int | None = bound(None, ge=1)
    on_short: str = bound("error", choices=("error", "skip"))
    remap_ids: bool = False
    allow_modified: bool = False

    def __post_init__(self):
        check_fields(self)

    @property
    def step(self) -> int:
        """``window_step``, or its default: ``max_len - 1`` for sliding windows
        (consecutive windows share one item, so a next-item model sees every
        target once an epoch), 1 for tail windows."""
        return self.window_step or (max(self.max_len - 1, 1) if self.windows == "sliding" else 1)

    def examples(self, sequences, window: int):
        """The training windows of ``window`` items this config cuts from ``sequences``."""
        from .batching import training_windows
        return training_windows(sequences, self.windows, window, self.step)


@dataclass(frozen=True)
class EvalConfig:
    """The protocol's one option. ``history_exclusion="all-but-target"``: the
    user's whole history is removed from the ranking except the target itself
    (EMKD's convention; a repeated target is still ranked). ``"none"``: every
    item is ranked, history included."""

    history_exclusion: str = bound("all-but-target", choices=HISTORY_EXCLUSION)

    def __post_init__(self):
        check_fields(self)


# Options added to the configs after stored results existed: (part, field) ->
# the value every earlier run was trained with. At that value the option is
# left out of a run's identity (its key stays what it was).
ADDED_OPTIONS = {("train", "precision"): "fp32", ("train", "activation_checkpointing"): False,
                 ("train", "checkpoint_rows"): None, ("params", "output_chunk"): None,
                 ("train", "batch_order"): "length-buckets", ("params", "loss_reduction"): "positions",
                 ("params", "mask_rule"): "bert"}


@dataclass(frozen=True)
class RunConfig:
    dataset: str
    method: str
    profile: str
    seed: int = 0
    encoder: str = "sasrec"
    encoder_config: object = None   # the encoder's typed config (models.encoders.ENCODER_CONFIGS)
    params: object = None           # the method's typed params (its MethodSpec.params_type)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        from .methods import method_spec  # methods import this module's configs

        def fail(message):
            raise ValueError(f"RunConfig: {message}")

        if not isinstance(self.dataset, str) or not self.dataset:
            fail(f"dataset must be a non-empty string, got {self.dataset!r}")
        if self.profile not in PROFILES:
            fail(f"unknown profile {self.profile!r}; known: {PROFILES}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            fail(f"seed must be an int >= 0, got {self.seed!r}")
        spec = method_spec(self.method)
        if self.encoder not in spec.encoders:
            fail(f"method {self.method!r} runs on encoders {spec.encoders}, not {self.encoder!r}")
        if self.encoder_config is None:
            object.__setattr__(self, "encoder_config", ENCODER_CONFIGS[self.encoder]())
        if self.params is None:
            object.__setattr__(self, "params", spec.params_type())
        for name, expected in (("encoder_config", ENCODER_CONFIGS[self.encoder]), ("params", spec.params_type),
                               ("train", TrainConfig), ("data", DataConfig), ("evaluation", EvalConfig)):
            value = getattr(self, name)
            if not isinstance(value, expected):
                fail(f"{name} of {self.method}/{self.encoder} must be a {expected.__name__}, "
                     f"got {type(value).__name__}")

    @property
    def spec(self):
        from .methods import method_spec
        return method_spec(self.method)

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "method": self.method, "profile": self.profile, "seed": self.seed,
                "encoder": self.encoder,
                **{name: dataclasses.asdict(getattr(self, name))
                   for name in ("encoder_config", "params", "train", "data", "evaluation")}}

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        from .methods import method_spec
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"RunConfig: unknown key(s) {unknown}; allowed: {sorted(known)}")
        spec = method_spec(d["method"])
        encoder = d.get("encoder", spec.encoders[0])
        return cls(dataset=d["dataset"], method=d["method"], profile=d["profile"], seed=d.get("seed", 0),
                   encoder=encoder,
                   encoder_config=from_dict(ENCODER_CONFIGS[encoder], d.get("encoder_config")),
                   params=from_dict(spec.params_type, d.get("params")),
                   train=from_dict(TrainConfig, d.get("train")), data=from_dict(DataConfig, d.get("data")),
                   evaluation=from_dict(EvalConfig, d.get("evaluation")))

    def identity(self) -> dict:
        """What reaches the model and the data: everything but the profile
        label, and the options added after results were stored while they are
        at the value those results were trained with (``ADDED_OPTIONS``), so
        that adding an option never changes the key of a stored run."""
        d = self.to_dict()
        del d["profile"]
        for (part, name), old_value in ADDED_OPTIONS.items():
            if name in d[part] and d[part][name] == old_value:
                del d[part][name]
        return d

    def replace(self, **changes) -> "RunConfig":
        """A copy with top-level fields, or nested ones as ``train__epochs=5``
        (``params__n_networks=2``, ``data__max_users=3000``, ...) changed;
        an unknown name is an error."""
        from .typed import replace as typed_replace
        top, nested = {}, {}
        for key, value in changes.items():
            if "__" in key:
                part, name = key.split("__", 1)
                nested.setdefault(part, {})[name] = value
            else:
                top[key] = value
        for part, values in nested.items():
            if part not in ("encoder_config", "params", "train", "data", "evaluation"):
                raise ValueError(f"RunConfig: no nested config {part!r}")
            top[part] = typed_replace(top.get(part, getattr(self, part)), **values)
        return typed_replace(self, **top)

    def label(self) -> str:
        """Short name for files and progress bars: method, encoder if not its own, profile, seed."""
        from .methods import method_name
        return f"{method_name(self.method, self.encoder)}-{self.profile}-seed{self.seed}"
