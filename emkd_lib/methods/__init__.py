"""The methods of the study, one module per paper, registered as plain specs.

Adding a method touches its own module and the one line below that merges
its specs into ``METHODS``.
"""
import re

from ..models.encoders import checkpoint_transformer_blocks
from . import baselines, cl4srec, duorec, emkd, iclrec, odmt, s4rec
from .spec import LossTerms, MethodSpec, Recipe

METHODS: dict[str, MethodSpec] = {**baselines.SPECS, **emkd.SPECS, **s4rec.SPECS, **cl4srec.SPECS,
                                  **iclrec.SPECS, **duorec.SPECS, **odmt.SPECS}


def method_spec(name: str) -> MethodSpec:
    """The registered spec of ``name``; an unknown name lists the known ones."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}") from None


def parse_method(name: str) -> tuple[str, str | None]:
    """``"emkd"`` -> ("emkd", None: its own encoder); ``"emkd-sasrec"`` ->
    ("emkd", "sasrec"), the form of ``RunConfig.label`` (benchmark outputs
    name methods so). An unknown name lists the known methods."""
    from ..models.encoders import ENCODERS
    method, _, encoder = name.rpartition("-")
    if name not in METHODS and method and encoder in ENCODERS:
        return method_spec(method).name, encoder   # an unknown method is an error naming the known ones
    return method_spec(name).name, None


_WITH_VARIANT = re.compile(r"^(?P<name>[^\[\]]+)(?:\[(?P<variant>[\w-]+)\])?$")


def method_title(name) -> str:
    """A method id as the book names methods: ``"sasrec"`` -> ``"SASRec"``,
    ``"emkd-gru4rec"`` (``parse_method``'s form) -> ``"EMKD (GRU4Rec)"``, and
    with a benchmark's variant, ``"emkd-gru4rec[bf16]"`` -> ``"EMKD (GRU4Rec,
    bf16)"``, as ``report.method_label`` names a run. Anything else (a
    dataset, a seed, an unknown id) is kept as written."""
    match = _WITH_VARIANT.match(name) if isinstance(name, str) else None
    if match is None:
        return str(name)
    try:
        method, encoder = parse_method(match["name"])
    except ValueError:
        return name
    details = ([method_spec(encoder).title] if encoder else []) + ([match["variant"]] if match["variant"] else [])
    title = method_spec(method).title
    return f"{title} ({', '.join(details)})" if details else title


def build_method(config, dataset):
    """``(model, Recipe)`` of a run config on a dataset."""
    model, recipe = method_spec(config.method).build(config, dataset)
    if config.train.activation_checkpointing:
        checkpoint_transformer_blocks(model, config.train.checkpoint_rows)
    return model, recipe


__all__ = ["METHODS", "LossTerms", "MethodSpec", "Recipe", "build_method", "method_spec", "method_title",
           "parse_method"]
