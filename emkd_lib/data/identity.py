"""A dataset's identity without parsing it: the sha256 of the files a load
would read (cached by path, size and mtime), for looking a run up in the
store."""
from __future__ import annotations

from .. import settings as settings_module
from ..files import cached_file_sha256
from .fetch import resolve_dataset_dir
from .registry import dataset_spec


def dataset_files(name: str, data_dir=None, settings=None) -> dict[str, str]:
    """``{file name: sha256}`` of the files ``load_dataset(name)`` reads."""
    settings = settings or settings_module.current()
    registry_dir = data_dir if data_dir is not None else settings.data_dir
    spec = dataset_spec(name, registry_dir)
    folder = resolve_dataset_dir(spec, registry_dir, download=True)
    read = [spec.sequence_file] + [f for f in [spec.attribute_file] if f and (folder / f).is_file()]
    read += [f for f in spec.extra_files if f not in read]
    return {f: cached_file_sha256(folder / f, settings.cache_dir / "sha256.json") for f in read}
