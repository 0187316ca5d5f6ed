"""``load_dataset``: a name in, a validated :class:`SequenceDataset` out,
with the checksum of every file it read."""
from __future__ import annotations

import sys


from .. import settings as settings_module
from .containers import SequenceDataset
from .fetch import resolve_dataset_dir
from .identity import dataset_files
from .parsers import parse_attribute_file, parse_items_csv, parse_sequence_file, parse_udata_file, remap_dense
from .registry import LOAD_CHECK_EXEMPT, dataset_spec
from .splits import repeat_target_users


def load_dataset(name: str, data_dir=None, download: bool = True, on_short: str = "error",
                 remap_ids: bool = False, allow_modified: bool = False, settings=None) -> SequenceDataset:
    """Find (or download), verify and parse dataset ``name``.

    ``data_dir`` defaults to ``$EMKD_DATA_DIR``; either one, when given, must
    hold the dataset (``fetch.resolve_dataset_dir``). Every file read is
    hashed (cached by path, size and mtime) into ``SequenceDataset.files``; a
    bundled dataset's file whose hash differs from the published one is an
    error naming both, unless ``allow_modified`` (the run then gets its own
    identity through the new hash). ``n_items`` is the largest item id;
    sparse ids raise unless ``remap_ids`` renumbers items densely. Users with
    fewer than three items raise unless ``on_short="skip"``. Users whose test
    or validation target also occurs earlier in their history are counted
    and reported once (the evaluation's ``history_exclusion`` decides what
    that means for their ranks). A protocol dataset (``DatasetSpec.min_length``,
    ``keep_recent``: ODMT's) filters and cuts users after parsing.
    """
    settings = settings or settings_module.current()
    registry_dir = data_dir if data_dir is not None else settings.data_dir
    spec = dataset_spec(name, registry_dir)
    folder = resolve_dataset_dir(spec, registry_dir, download)
    files = dataset_files(name, folder.parent if spec.user_folder is None else registry_dir, settings)
    for fname, digest in files.items():
        expected = spec.sha256.get(fname)
        if expected and digest != expected and (spec.name, fname) not in LOAD_CHECK_EXEMPT and not allow_modified:
            raise ValueError(f"{folder / fname}: sha256 {digest} differs from the published {expected} of "
                             f"dataset {spec.name!r}; restore the file, or pass allow_modified=True "
                             f"(CLI --allow-modified-data) to run on it under its own identity")

    seq_path = folder / spec.sequence_file
    if spec.sequence_format == "udata":
        user_ids, sequences = parse_udata_file(seq_path, on_short=on_short)
    else:
        user_ids, sequences = parse_sequence_file(seq_path, on_short=on_short, check_ids=not remap_ids)
    item_map = None
    if remap_ids:
        sequences, item_map = remap_dense(sequences)
    n_items = int(max(s.max() for s in sequences))
    if spec.min_length is not None or spec.keep_recent is not None:
        # A protocol on another dataset's files: the catalogue (n_items, and
        # the item ids the features are indexed by) stays the full one's.
        keep = [i for i, s in enumerate(sequences) if len(s) >= (spec.min_length or 0)]
        if not keep:
            raise ValueError(f"dataset {name!r}: no user has the {spec.min_length} items its protocol needs")
        user_ids = user_ids[keep]
        sequences = [sequences[i][-spec.keep_recent:] if spec.keep_recent else sequences[i] for i in keep]
    attributes = None
    if spec.attribute_file and spec.attribute_file in files:
        attr_path = folder / spec.attribute_file
        if attr_path.suffix == ".csv":
            attributes = parse_items_csv(attr_path, n_items)
        else:
            attributes = parse_attribute_file(attr_path, n_items, item_map)
    repeats = int(repeat_target_users(sequences).sum())
    if repeats:
        print(f"dataset {name!r}: {repeats} of {len(sequences)} users have a validation or test target that "
              f"also occurs earlier in their history", file=sys.stderr)
    return SequenceDataset(name=name, user_ids=user_ids, sequences=sequences, n_items=n_items,
                           attributes=attributes, source=str(seq_path), files=files)
