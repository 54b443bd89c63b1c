"""Data loading: the real MNIST split, every raw file format and the tfds dir the loaders read,
errors that say what was looked for and where, and the crop/flip augmentation."""

import gzip
import io
import pickle
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gtn_nas.io.data as data
from gtn_nas.core.images import crop_flip, random_crop
from gtn_nas.io.data import load_dataset, read_arrays
from gtn_nas.io.data.base import NORMALISATION
from gtn_nas.io.data.raw import CIFAR10_CLASSES
from gtn_nas.errors import DataError, GtnError

from conftest import _write_idx


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Nothing here may reach the network or the user's cache."""
    monkeypatch.setenv("GTN_NAS_NO_DOWNLOAD", "1")
    monkeypatch.setenv("GTN_NAS_CACHE_DIR", str(tmp_path / "cache"))


def _fake_idx(folder, n_train=12, n_test=5, seed=0, gz=True):
    """Four IDX files whose image i has pixel (0, 0) = i, so order and pairing can be checked."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        x[:, 0, 0] = np.arange(n)
        y = rng.integers(0, 10, n).astype(np.uint8)
        for kind, a in (("images-idx3", x), ("labels-idx1", y)):
            path = folder / f"{prefix}-{kind}-ubyte.gz"
            _write_idx(path, a)
            if not gz:  # the uncompressed variant the readers also accept
                path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
                path.unlink()
        arrays[prefix] = (x, y)
    return arrays


def _gtn_error(excinfo):
    err = excinfo.value
    assert isinstance(err, GtnError) and err.exit_code == 2
    assert "\n" not in str(err)
    return str(err)


# ----------------------------------------------------------------------------- real MNIST

def test_real_mnist_split_sizes_and_seeded_split(shared_data, monkeypatch):
    reads = []
    read_once = {}

    def cached_read(name, data_dir=None):  # decode the 60k images once for the three splits
        reads.append(name)
        if name not in read_once:
            read_once[name] = read_arrays(name, data_dir)
        return read_once[name]

    monkeypatch.setattr(data, "read_arrays", cached_read)
    ds = load_dataset("mnist", shared_data, split_seed=0)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (50_000, 10_000, 10_000)
    assert ds.image_shape == (28, 28, 1) and ds.num_classes == 10
    for split in (ds.train, ds.validation, ds.test):
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == (28, 28, 1)
        assert split.labels.min() == 0 and split.labels.max() == 9
        assert set(np.unique(split.labels)) == set(range(10))
    assert "mnist" in ds.source

    same = load_dataset("mnist", shared_data, split_seed=0)
    other = load_dataset("mnist", shared_data, split_seed=1)
    assert len(reads) == 3
    np.testing.assert_array_equal(same.train.images, ds.train.images)
    np.testing.assert_array_equal(same.validation.labels, ds.validation.labels)
    assert len(other.train) == 50_000 and len(other.validation) == 10_000
    assert not np.array_equal(other.validation.images, ds.validation.images)
    np.testing.assert_array_equal(other.test.images, ds.test.images)  # the test set is never split
    # Both seeds partition the same 60k official training images.
    total = lambda d: int(d.train.images.sum(dtype=np.int64) + d.validation.images.sum(dtype=np.int64))
    assert total(ds) == total(other)


# ----------------------------------------------------------------------------- raw formats

@pytest.mark.parametrize("name, gz", [("mnist", True), ("fashion_mnist", False)])
def test_idx_files_load(tmp_path, name, gz):
    arrays = _fake_idx(tmp_path / "data" / name, gz=gz)
    xtr, ytr, xte, yte, source = read_arrays(name, tmp_path / "data")
    assert xtr.shape == (12, 28, 28, 1) and xte.shape == (5, 28, 28, 1)
    assert xtr.dtype == np.uint8 and ytr.dtype == np.int32
    np.testing.assert_array_equal(xtr[..., 0], arrays["train"][0])
    np.testing.assert_array_equal(ytr, arrays["train"][1])
    np.testing.assert_array_equal(yte, arrays["t10k"][1])
    assert str(tmp_path / "data" / name) in source

    ds = load_dataset(name, tmp_path / "data" / name, split_seed=3)  # the folder itself works too
    assert len(ds.train) == 10 and len(ds.validation) == 2 and len(ds.test) == 5  # 5/6 of 12
    seen = np.concatenate([ds.train.images[:, 0, 0, 0], ds.validation.images[:, 0, 0, 0]])
    assert sorted(seen.tolist()) == list(range(12))
    assert (ds.mean, ds.std) == NORMALISATION[name]


def _cifar_batch(n, offset):
    rng = np.random.default_rng(offset)
    x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    x[:, 0] = np.arange(offset, offset + n)  # red channel of pixel (0, 0)
    return {b"data": x, b"labels": [(offset + i) % 10 for i in range(n)]}


def test_cifar_python_tar_loads(tmp_path):
    folder = tmp_path / "cifar10"
    folder.mkdir()
    batches = {f"data_batch_{i}": _cifar_batch(2, 2 * (i - 1)) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(3, 100)
    with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name, batch in batches.items():
            raw = pickle.dumps(batch)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    xtr, ytr, xte, yte, source = read_arrays("cifar10", tmp_path)
    assert xtr.shape == (10, 32, 32, 3) and xte.shape == (3, 32, 32, 3) and xtr.dtype == np.uint8
    np.testing.assert_array_equal(xtr[:, 0, 0, 0], np.arange(10))  # batches 1..5 in order
    np.testing.assert_array_equal(ytr, np.arange(10) % 10)
    np.testing.assert_array_equal(yte, [0, 1, 2])
    # CHW rows -> HWC images
    chw = batches["data_batch_1"][b"data"][1].reshape(3, 32, 32)
    np.testing.assert_array_equal(xtr[1], chw.transpose(1, 2, 0))
    assert "cifar10" in source


def test_cifar_image_folder_tree_loads(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    tree = tmp_path / "cifar10"
    expected = {}
    for split, classes in (("train", ("cat", "airplane", "truck")), ("test", ("dog", "cat"))):
        for c in classes:
            (tree / split / c).mkdir(parents=True)
            for j in range(2):
                img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(img).save(tree / split / c / f"{j}.png")  # lossless
                expected.setdefault(split, []).append((c, j, img))
    xtr, ytr, xte, yte, source = read_arrays("cifar10", tmp_path)
    assert xtr.shape == (6, 32, 32, 3) and xte.shape == (4, 32, 32, 3) and xtr.dtype == np.uint8
    for x, y, split in ((xtr, ytr, "train"), (xte, yte, "test")):
        rows = sorted(expected[split], key=lambda r: (r[0], r[1]))
        np.testing.assert_array_equal(y, [CIFAR10_CLASSES.index(c) for c, _, _ in rows])
        np.testing.assert_array_equal(x, np.stack([img for _, _, img in rows]))
    assert str(tree) in source
    again = read_arrays("cifar10", tmp_path)  # served from the .npz cache
    np.testing.assert_array_equal(again[0], xtr)
    assert list((tmp_path / "cache").glob("cifar10-*.npz"))


# ----------------------------------------------------------------------------- errors

def test_missing_folder_names_what_and_where(tmp_path):
    where = tmp_path / "nowhere"
    with pytest.raises(DataError) as e:
        load_dataset("mnist", where)
    msg = _gtn_error(e)
    assert "train-images-idx3-ubyte.gz" in msg and str(where) in msg and "mnist" in msg


def test_truncated_gz_names_the_file(tmp_path):
    _fake_idx(tmp_path / "mnist")
    bad = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-40])
    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path)
    msg = _gtn_error(e)
    assert str(bad) in msg and "truncated" in msg


def test_wrong_magic_number_names_the_file(tmp_path):
    _fake_idx(tmp_path / "mnist")
    bad = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x12\x34\x08\x01" + b"\0\0\0\x05" + bytes(5)))
    with pytest.raises(DataError) as e:
        read_arrays("mnist", tmp_path)
    msg = _gtn_error(e)
    assert str(bad) in msg and "magic" in msg


def test_partial_idx_set_lists_the_missing_files(tmp_path):
    _fake_idx(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError) as e:
        read_arrays("mnist", tmp_path)
    assert "t10k-images-idx3-ubyte.gz" in _gtn_error(e)


# ----------------------------------------------------------------------------- tfds dir

def _build_tfds(data_dir, n_train, n_test):
    import tensorflow_datasets as tfds

    def examples(n, seed):
        rng = np.random.default_rng(seed)
        for i in range(n):
            img = rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)
            img[0, 0, 0] = i
            yield i, {"image": img, "label": (3 * i + seed) % 10}

    class Mnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
                "label": tfds.features.Tensor(shape=(), dtype=np.int64)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(n_train, 0),
                    "test": self._generate_examples(n_test, 1)}

        def _generate_examples(self, n, seed):
            yield from examples(n, seed)

    builder = Mnist(data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return {split: list(examples(n, seed)) for split, n, seed in
            (("train", n_train, 0), ("test", n_test, 1))}


def test_prepared_tfds_dir_loads(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    root = tmp_path / "tfds"
    want = _build_tfds(root, 24, 8)
    assert (root / "mnist" / "1.0.0" / "dataset_info.json").exists()
    xtr, ytr, xte, yte, source = read_arrays("mnist", root)
    assert source == f"tfds dir {root / 'mnist' / '1.0.0'}"
    for x, y, split in ((xtr, ytr, "train"), (xte, yte, "test")):
        rows = want[split]
        assert x.shape == (len(rows), 28, 28, 1) and x.dtype == np.uint8 and y.dtype == np.int32
        order = np.argsort(x[:, 0, 0, 0])  # tfds shuffles; pixel (0, 0) is the example index
        np.testing.assert_array_equal(x[order], np.stack([r["image"] for _, r in rows]))
        np.testing.assert_array_equal(y[order], [r["label"] for _, r in rows])
    ds = load_dataset("mnist", root, split_seed=0)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (20, 4, 8)


# ----------------------------------------------------------------------------- augmentation

def test_augment_crop_flip_shapes_and_determinism(key):
    images = jnp.asarray(np.random.default_rng(0).integers(1, 256, (6, 8, 8, 3)), jnp.uint8)
    a = crop_flip(key, images)
    b = crop_flip(key, images)
    c = crop_flip(jax.random.PRNGKey(1), images)
    assert a.shape == images.shape and a.dtype == images.dtype
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Without padding every image is itself or its mirror image.
    same = np.asarray(random_crop(key, images, pad=0, flip=True))
    x = np.asarray(images)
    for out, im in zip(same, x):
        assert np.array_equal(out, im) or np.array_equal(out, im[:, ::-1])


def test_default_data_dir_is_shared_data_beside_the_repository(monkeypatch):
    """Without $GTN_NAS_DATA_DIR the data are read from ../shared/data beside the checkout (the
    README's first command relies on it; a module moved a level deeper once broke it)."""
    from pathlib import Path

    monkeypatch.delenv("GTN_NAS_DATA_DIR", raising=False)
    repo = Path(__file__).resolve().parents[1]
    assert data.default_data_dir() == repo.parent / "shared" / "data"
