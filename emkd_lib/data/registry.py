"""Which datasets exist: the bundled ones, with their published checksums,
and the ones a user registered (``python -m emkd_lib data add``).

A user registry is a small JSON file, ``registry.json``, in the data
directory; each entry names a sequence file (``user item item ...`` lines)
and optionally an S3-Rec style attribute JSON. Registering copies nothing:
the entry points at the user's files, and their checksums still enter every
run's identity (``data.load``).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ..files import atomic_write_bytes
from .parsers import parse_sequence_file

S3REC_BASE_URL = "https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/master/data/"
GROUPLENS_BASE_URL = "https://files.grouplens.org/datasets/movielens/"
REGISTRY_FILE = "registry.json"


# The datasets whose per-dataset settings the papers give (EMKD's Section 5);
# any other dataset takes one of theirs, Beauty's unless its spec says otherwise.
SETTINGS_SOURCES = ("beauty", "toys", "ml-1m")
DEFAULT_SETTINGS_LIKE = "beauty"


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives on disk and where it comes from.

    ``sequence_file``/``attribute_file`` are the files the loader reads;
    ``sequence_format`` is ``"text"`` (``user item item ...`` lines) or
    ``"udata"`` (MovieLens ``u.data``); an attribute file is S3-Rec JSON, or
    for ``ml-100k`` the optional ``items.csv``. ``required_files`` must all be
    present for a folder to count as holding the dataset. ``sha256`` holds the
    published checksums of the mirror's files (README of the offline mirror);
    ``verified_on_download``
    names the subset a download can reproduce bit for bit and therefore
    checks. ``download_format`` says how the remote files become local ones:
    ``"files"`` (copy each of ``remote_files``), ``"ml-1m-zip"`` (convert
    ratings.dat/movies.dat) or ``"ml-100k-zip"`` (extract u.data).
    """

    name: str
    folder: str
    sequence_file: str
    sequence_format: str
    attribute_file: str | None
    required_files: tuple[str, ...]
    optional_files: tuple[str, ...]
    sha256: dict[str, str]
    verified_on_download: tuple[str, ...]
    base_url: str
    remote_files: tuple[str, ...]
    download_format: str
    homepage: str
    # A user-registered dataset: absolute file paths, no known checksums.
    user_folder: Path | None = None
    # A protocol on top of another dataset's files (ODMT's, Section 4.1):
    # users with at least ``min_length`` items, each cut to its most recent
    # ``keep_recent``; ``extra_files`` (item texts) enter the run's identity;
    # ``features_from`` names the dataset whose cached item features it uses.
    min_length: int | None = None
    keep_recent: int | None = None
    extra_files: tuple[str, ...] = ()
    features_from: str | None = None
    # The dataset of the papers whose per-dataset settings (training windows,
    # EMKD's tau, dropout and heads) this one takes where no paper gives its
    # own: by kind of data, a sparse Amazon category or a dense MovieLens one.
    settings_like: str = DEFAULT_SETTINGS_LIKE

    @property
    def source_urls(self) -> tuple[str, ...]:
        """Full public URLs of the remote files."""
        return tuple(self.base_url + f for f in self.remote_files)


def _amazon_spec(
    name: str, stem: str, seq_sha: str, attr_sha: str, optional: dict[str, str] | None = None,
    settings_like: str = DEFAULT_SETTINGS_LIKE,
) -> DatasetSpec:
    """An S3-Rec Amazon dataset: ``<stem>.txt`` + ``<stem>_item2attributes.json``.

    ``optional`` maps extra mirror-only files to their sha256.
    """
    seq, attr = f"{stem}.txt", f"{stem}_item2attributes.json"
    optional = optional or {}
    return DatasetSpec(
        name=name,
        folder=name,
        sequence_file=seq,
        sequence_format="text",
        attribute_file=attr,
        required_files=(seq, attr),
        optional_files=tuple(optional),
        sha256={seq: seq_sha, attr: attr_sha, **optional},
        verified_on_download=(seq, attr),
        base_url=S3REC_BASE_URL,
        remote_files=(seq, attr),
        download_format="files",
        homepage="https://github.com/RUCAIBox/CIKM2020-S3Rec",
        settings_like=settings_like,
    )


BUNDLED: dict[str, DatasetSpec] = {
    "beauty": _amazon_spec(
        "beauty", "Beauty",
        "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
        "129e40f67486f6877eff0f5318cfa8530ee8ac23d8b0d1de04e1bb7a2ba0b2d4",
        # Item titles joined to Beauty.txt ids; only in the offline mirror.
        optional={
            "Beauty_item_text.tsv": "c8918224ec1344b6a713e8c7c8325e12f9d519d425cc2714986e24414500c6e0",
        },
    ),
    "toys": _amazon_spec(
        "toys", "Toys_and_Games",
        "176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f",
        "d371acd25101eedac04afc727626464b7acec770c4eda708705d51eb76eb1ad0",
        settings_like="toys",
    ),
    "sports": _amazon_spec(
        "sports", "Sports_and_Outdoors",
        "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2",
        "7fb10733ac4f1811384a52144cdefa7fcc7536fa80a7232c5da9bd789155c34b",
    ),
    "ml-1m": DatasetSpec(
        name="ml-1m",
        folder="ml-1m",
        sequence_file="ml-1m.txt",
        sequence_format="text",
        attribute_file="ML-1M_item2attributes.json",
        required_files=("ml-1m.txt", "ML-1M_item2attributes.json"),
        optional_files=(),
        sha256={
            "ml-1m.txt": "567df58c3822a48e1a92c8d94b43d25fac7f06fd37b817b2a2fc9af364a1b88b",
            "ML-1M_item2attributes.json":
                "977908037ed1cc8a31b96f6ca1c04f60314f4cc28dbe0c43d8e970fdaf64d200",
        },
        # The public attribute file numbered genres in Python set order (hash
        # randomised, not reproducible); our conversion numbers them by first
        # appearance, a relabelling with the same item -> genre-set structure,
        # so only the sequence file can be checked against the checksum.
        verified_on_download=("ml-1m.txt",),
        base_url=GROUPLENS_BASE_URL,
        remote_files=("ml-1m.zip",),
        download_format="ml-1m-zip",
        homepage="https://grouplens.org/datasets/movielens/1m/",
        settings_like="ml-1m",
    ),
    "ml-100k": DatasetSpec(
        name="ml-100k",
        folder="ml-100k",
        sequence_file="u.data",
        sequence_format="udata",
        # items.csv (TMDB-enriched, with 19 genre flags) is only in the
        # offline mirror; without it the dataset has no attributes.
        attribute_file="items.csv",
        required_files=("u.data",),
        optional_files=("items.csv",),
        sha256={
            "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
            "items.csv": "8e6f40029c1beebe19bf64b6e58f65c3fcb7bb31dbfc08e4d9681445dc74dc27",
        },
        verified_on_download=("u.data",),
        base_url=GROUPLENS_BASE_URL,
        remote_files=("ml-100k.zip",),
        download_format="ml-100k-zip",
        homepage="https://grouplens.org/datasets/movielens/100k/",
        settings_like="ml-1m",
    ),
}



def _odmt_protocol(base: DatasetSpec, name: str, extra_files: tuple[str, ...]) -> DatasetSpec:
    """ODMT's protocol on ``base``'s files: users with more than five
    interactions, each cut to its 15 most recent (ODMT Section 4.1); the item
    catalogue (ids and their features) stays the base dataset's."""
    return dataclasses.replace(
        base, name=name, required_files=base.required_files + tuple(f for f in extra_files
                                                                      if f not in base.required_files),
        min_length=6, keep_recent=15, extra_files=extra_files, features_from=base.name)


BUNDLED["ml-100k-odmt"] = _odmt_protocol(BUNDLED["ml-100k"], "ml-100k-odmt", ("items.csv",))
BUNDLED["beauty-odmt"] = _odmt_protocol(BUNDLED["beauty"], "beauty-odmt", ("Beauty_item_text.tsv",))


# The attribute file of an ML-1M download is our relabelling of the mirror's
# (see ``fetch.convert_ml1m``), so only the mirror's copy has a known hash.
LOAD_CHECK_EXEMPT = {("ml-1m", "ML-1M_item2attributes.json")}


def settings_like(name: str, registry_dir: Path | None = None) -> str:
    """The dataset whose per-dataset paper settings ``name`` takes
    (``DatasetSpec.settings_like``): for a registered dataset, what ``data
    add --like`` recorded (default Beauty's, the sparsest of the papers'
    datasets). ``registry_dir`` defaults to the current data directory."""
    if registry_dir is None and name not in BUNDLED:
        from .. import settings as settings_module
        registry_dir = settings_module.current().data_dir
    try:
        return dataset_spec(name, registry_dir).settings_like
    except KeyError:   # not registered (yet): what ``data add`` would record by default
        return DEFAULT_SETTINGS_LIKE


def user_spec(name: str, sequences: Path, attributes: Path | None,
              settings_like: str = DEFAULT_SETTINGS_LIKE) -> DatasetSpec:
    """The spec of a user's dataset: files where they are, nothing to download."""
    sequences = Path(sequences).resolve()
    if attributes is not None:
        attributes = Path(attributes).resolve()
        if attributes.parent != sequences.parent:
            raise ValueError(f"dataset {name!r}: the attribute file must sit beside the sequence file "
                             f"({sequences.parent}), got {attributes}")
    return DatasetSpec(
        name=name, folder=str(sequences.parent), sequence_file=sequences.name, sequence_format="text",
        attribute_file=attributes.name if attributes else None,
        required_files=(sequences.name,) + ((attributes.name,) if attributes else ()),
        optional_files=(), sha256={}, verified_on_download=(), base_url="", remote_files=(),
        download_format="none", homepage="", user_folder=sequences.parent, settings_like=settings_like)


def _check_name(name: str) -> None:
    # A name is a folder of the result store: '.' or '..' would write beside it.
    if (not isinstance(name, str) or not name or not name[0].isalnum()
            or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in name)):
        raise ValueError(f"dataset name {name!r}: use letters, digits, '-', '_' or '.', "
                         f"starting with a letter or digit")


def _read_entries(path: Path) -> dict:
    """The raw entries of a registry file (none if absent); an unreadable
    file or entry is one error naming the file."""
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError(f"expected an object of datasets, got {type(raw).__name__}")
        for name, entry in raw.items():
            # Names registered under an older, looser rule stay usable; only
            # one that would lead a path out of the store is refused.
            if name in ("", ".", "..") or "/" in name or "\\" in name:
                raise ValueError(f"entry {name!r} is not a usable dataset name")
            if not isinstance(entry, dict) or not isinstance(entry.get("sequences"), str):
                raise ValueError(f"entry {name!r} has no sequence file")
            if not isinstance(entry.get("attributes") or "", str):
                raise ValueError(f"entry {name!r} names its attribute file with a {type(entry['attributes']).__name__}")
            if entry.get("settings_like", DEFAULT_SETTINGS_LIKE) not in SETTINGS_SOURCES:
                raise ValueError(f"entry {name!r}: settings_like must be one of {SETTINGS_SOURCES}")
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"dataset registry {path} is unreadable: {err}") from None
    return raw


def read_registry(registry_dir: Path | None) -> dict[str, DatasetSpec]:
    """The user datasets registered in ``registry_dir/registry.json`` (none if absent)."""
    if registry_dir is None:
        return {}
    path = Path(registry_dir) / REGISTRY_FILE
    return {name: user_spec(name, Path(entry["sequences"]),
                            Path(entry["attributes"]) if entry.get("attributes") else None,
                            entry.get("settings_like") or _legacy_settings_like(name))
            for name, entry in _read_entries(path).items()}


def _legacy_settings_like(name: str) -> str:
    # Entries written before ``settings_like`` was recorded keep the settings
    # (and so the run keys) they had then, when a name prefix chose them.
    return "ml-1m" if name.startswith("ml-") else DEFAULT_SETTINGS_LIKE


def register_dataset(name: str, sequences: str | Path, attributes: str | Path | None,
                     registry_dir: Path, settings_like: str = DEFAULT_SETTINGS_LIKE) -> DatasetSpec:
    """Add (or replace) a user dataset in ``registry_dir/registry.json``,
    atomically; ``settings_like`` names the paper dataset whose per-dataset
    settings it takes (windows, EMKD's tau, dropout and heads)."""
    _check_name(name)
    if settings_like not in SETTINGS_SOURCES:
        raise ValueError(f"settings_like must be one of {SETTINGS_SOURCES}, got {settings_like!r}")
    if name in BUNDLED:
        raise ValueError(f"dataset name {name!r} is a bundled dataset; choose another name")
    for label, f in (("sequence file", sequences), ("attribute file", attributes)):
        if f is not None and not Path(f).is_file():
            raise FileNotFoundError(f"{label} {f} does not exist")
    if Path(registry_dir).exists() and not Path(registry_dir).is_dir():
        raise NotADirectoryError(f"data directory {registry_dir} is a file, not a directory")
    # Read once now, so a malformed line is reported when the file is added,
    # not by the first run (short users and sparse ids are a run's options).
    parse_sequence_file(sequences, on_short="skip", check_ids=False)
    spec = user_spec(name, Path(sequences), Path(attributes) if attributes else None, settings_like)
    path = Path(registry_dir) / REGISTRY_FILE
    raw = _read_entries(path)
    raw[name] = {"sequences": str(Path(sequences).resolve()),
                 "attributes": str(Path(attributes).resolve()) if attributes else None,
                 "settings_like": settings_like}
    atomic_write_bytes(path, json.dumps(raw, indent=1, sort_keys=True).encode())
    return spec


def dataset_spec(name: str, registry_dir: Path | None = None) -> DatasetSpec:
    """The spec of a bundled or registered dataset; an unknown name is an error listing the known ones."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__} {name!r}")
    if name in BUNDLED:
        return BUNDLED[name]
    users = read_registry(registry_dir)
    if name in users:
        return users[name]
    known = ", ".join([*BUNDLED, *users])
    raise KeyError(f"unknown dataset {name!r}; known datasets: {known} "
                   f"(add your own with: python -m emkd_lib data add NAME --sequences FILE)")
