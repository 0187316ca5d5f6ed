"""Datasets for sequential recommendation: which exist (``registry``), how
files become arrays (``parsers``), where they are found or fetched from
(``fetch``), loading with checksums (``loading``), splits and the head/tail
user split (``splits``) and descriptive statistics (``stats``)."""
from .containers import ItemAttributes, SequenceDataset
from .fetch import convert_ml1m, download_dataset, resolve_dataset_dir
from .identity import dataset_files
from .loading import load_dataset
from .parsers import (parse_attribute_file, parse_items_csv, parse_sequence_file, parse_udata_file, remap_dense,
                      sparse_id_bound)
from .registry import BUNDLED, DatasetSpec, dataset_spec, read_registry, register_dataset
from .splits import LeaveOneOutSplit, leave_one_out, repeat_target_users, split_users_by_length, subsample_users
from .stats import dataset_statistics, head_items, head_tail_statistics, item_popularity, user_head_rate

__all__ = [
    "BUNDLED", "DatasetSpec", "ItemAttributes", "LeaveOneOutSplit", "SequenceDataset", "convert_ml1m",
    "dataset_files", "dataset_spec", "dataset_statistics", "download_dataset", "head_items", "head_tail_statistics",
    "item_popularity", "leave_one_out",
    "load_dataset", "parse_attribute_file", "parse_items_csv", "parse_sequence_file", "parse_udata_file",
    "read_registry", "register_dataset", "remap_dense", "repeat_target_users", "resolve_dataset_dir",
    "sparse_id_bound", "split_users_by_length", "subsample_users", "user_head_rate",
]
