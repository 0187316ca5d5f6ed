"""The methods of the study, one module per paper, registered as plain specs.

Adding a method touches its own module and the one line below that merges
its specs into ``METHODS``.
"""
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


def method_name(method: str, encoder: str | None) -> str:
    """``parse_method``'s inverse: ``"emkd"`` on its own encoder (or None),
    else ``"emkd-sasrec"``."""
    own = encoder is None or encoder == method_spec(method).encoders[0]
    return method if own else f"{method}-{encoder}"


def build_method(config, dataset):
    """``(model, Recipe)`` of a run config on a dataset."""
    model, recipe = method_spec(config.method).build(config, dataset)
    if config.train.activation_checkpointing:
        checkpoint_transformer_blocks(model, config.train.checkpoint_rows)
    return model, recipe


__all__ = ["METHODS", "LossTerms", "MethodSpec", "Recipe", "build_method", "method_name", "method_spec", "parse_method"]
