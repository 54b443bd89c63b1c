"""Datasets behind one call: ``load_dataset(name, data_dir, split_seed)``.

Sources, first found wins: raw files in ``data_dir`` (or ``data_dir/<name>``), a prepared
tensorflow-datasets dir there, then a tfds download when online. The paper's seeded
train/validation split is applied here so every command sees the same images.

Whatever the source, a data set must hold its official number of images (``OFFICIAL_SIZES``):
an ImageFolder tree with a lost file, or any reader that stopped early, would otherwise train
and report test accuracy on a part of the data without a word. A deliberate subset is allowed
with ``GTN_NAS_PARTIAL_DATA=1``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import numpy as np

from gtn_nas.io.data import raw, tfds_source
from gtn_nas.io.data.base import DATASETS, IMAGE_SHAPES, NORMALISATION, TRAIN_SIZES, Dataset, Split
from gtn_nas.errors import DataError

ENV_DATA_DIR = "GTN_NAS_DATA_DIR"
ENV_CACHE_DIR = "GTN_NAS_CACHE_DIR"
ENV_PARTIAL = "GTN_NAS_PARTIAL_DATA"
OFFICIAL_SIZES = {"mnist": (60_000, 10_000), "fashion_mnist": (60_000, 10_000),
                  "cifar10": (50_000, 10_000)}  # (train, test) images
EXPECTED_SHAPE = IMAGE_SHAPES
RAW_HINT = {
    "mnist": "the four IDX files train-images-idx3-ubyte.gz ... t10k-labels-idx1-ubyte.gz "
             "(https://yann.lecun.com/exdb/mnist/ or any mirror)",
    "fashion_mnist": "the four Fashion-MNIST IDX files train-images-idx3-ubyte.gz ... "
                     "(github.com/zalandoresearch/fashion-mnist)",
    "cifar10": "cifar-10-python.tar.gz (www.cs.toronto.edu/~kriz/cifar.html), its extracted "
               "batches, or an ImageFolder tree/tar of train/<class>/*.jpg and test/<class>/*.jpg",
}


def default_data_dir() -> Path:
    """$GTN_NAS_DATA_DIR, else ``../shared/data`` beside the repository (this project's own default)."""
    if os.environ.get(ENV_DATA_DIR):
        return Path(os.environ[ENV_DATA_DIR]).expanduser()
    repo = Path(__file__).resolve().parents[3]  # gtn_nas/io/data/__init__.py (tests pin it)
    return repo.parent / "shared" / "data"


def cache_dir() -> Path:
    return Path(os.environ.get(ENV_CACHE_DIR) or Path.home() / ".cache" / "gtn_nas").expanduser()


def _candidates(name: str, data_dir: Path) -> list[Path]:
    dirs = [data_dir / name, data_dir]
    return [d for d in dirs if d.is_dir()]


_CACHE_KEYS = ("xtr", "ytr", "xte", "yte")


def _cached(name: str, folder: Path, reader):
    """Decoding 60k JPEGs or tfds records takes a while: keep the arrays as .npz, keyed by source,
    with their digest. A cache entry that is unreadable or whose arrays no longer match their
    digest is rebuilt, never trusted. A cache folder that cannot be written is an error when the
    user named it ($GTN_NAS_CACHE_DIR), said before the decoding; the default one is done
    without."""
    from gtn_nas.io.files import digest_arrays

    named = os.environ.get(ENV_CACHE_DIR)
    if named and cache_dir().exists() and not cache_dir().is_dir():
        raise DataError(f"${ENV_CACHE_DIR}={named} is a file, not a folder for the data cache; "
                        "point it at a folder, or unset it")

    stamp = ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                     for p in sorted(folder.iterdir()))
    key = hashlib.sha1(f"{folder.resolve()}|{stamp}".encode()).hexdigest()[:12]
    path = cache_dir() / f"{name}-{key}.npz"
    try:
        with np.load(path) as z:
            arrays = tuple(z[k] for k in _CACHE_KEYS)
            if str(z["sha256"]) == digest_arrays(arrays):
                return arrays
    except Exception:  # noqa: BLE001 - missing, damaged or from an older gtn-nas: rebuilt below
        pass
    arrays = reader(folder)
    if arrays is not None:
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, **dict(zip(_CACHE_KEYS, arrays)), sha256=np.array(digest_arrays(arrays)))
            tmp.replace(path)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if named:
                raise DataError(f"cannot write the data cache in ${ENV_CACHE_DIR}={named} "
                                f"({e.strerror or e}); point it at a writable folder, or unset "
                                "it") from None
    return arrays


def _read_raw(name: str, data_dir: Path):
    for folder in _candidates(name, data_dir):
        if name == "cifar10":
            found = raw.read_cifar_python(folder)
            if found is None:
                found = _cached(name, folder, raw.read_image_folder)
        else:
            found = raw.read_idx_folder(folder, name)
        if found is not None:
            return found, f"raw files in {folder}"
    return None, None


def _read_tfds(name: str, data_dir: Path):
    folder = tfds_source.prepared_dir(name, data_dir)
    if folder is None:
        return None, None
    return _cached(name, folder, lambda f: tfds_source.read_prepared(name, data_dir)), f"tfds dir {folder}"


def read_arrays(name: str, data_dir: str | Path | None = None):
    """(train_x, train_y, test_x, test_y, source description), or DataError saying what to supply."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    arrays, source = _read_raw(name, root)
    if arrays is None:
        arrays, source = _read_tfds(name, root)
    if arrays is None and not os.environ.get("GTN_NAS_NO_DOWNLOAD"):
        arrays = tfds_source.download(name, cache_dir() / "tfds")
        source = f"tfds download into {cache_dir() / 'tfds'}"
    if arrays is None:
        raise DataError(f"{name} not found: looked for {RAW_HINT[name]} and a tfds data dir in "
                        f"{root} and {root / name} (offline, so no tfds download); pass --data-dir "
                        f"or set ${ENV_DATA_DIR}")
    xtr, ytr, xte, yte = arrays
    official = OFFICIAL_SIZES[name]
    if (len(ytr), len(yte)) != official and not os.environ.get(ENV_PARTIAL):
        raise DataError(f"{name} from {source} has {len(ytr):,} train + {len(yte):,} test "
                        f"images, not the official {official[0]:,} + {official[1]:,}: a file is "
                        f"damaged or missing (set {ENV_PARTIAL}=1 to use a deliberate subset)")
    for x, y, split in ((xtr, ytr, "train"), (xte, yte, "test")):
        if tuple(x.shape[1:]) != EXPECTED_SHAPE[name]:
            raise DataError(f"{name} {split} images from {source} have shape {x.shape[1:]}, "
                            f"expected {EXPECTED_SHAPE[name]}; is this the right dataset?")
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise DataError(f"{name} {split} labels from {source} are outside 0..9")
    return xtr, ytr, xte, yte, source


def split_train(x: np.ndarray, y: np.ndarray, train_size: int, seed: int) -> tuple[Split, Split]:
    """The paper's seeded random train/validation split of the official training set."""
    if len(y) <= train_size:  # small files (tests, subsets): keep the paper's ratio
        train_size = max(1, int(round(len(y) * 5 / 6)))
    perm = np.random.default_rng(seed).permutation(len(y))
    tr, va = np.sort(perm[:train_size]), np.sort(perm[train_size:])
    return Split(x[tr], y[tr]), Split(x[va], y[va])


MIN_SPLIT = {"train": 2, "validation": 1, "test": 1}  # below these, accuracies are NaN or noise


def load_dataset(name: str, data_dir: str | Path | None = None, split_seed: int = 0) -> Dataset:
    xtr, ytr, xte, yte, source = read_arrays(name, data_dir)
    train, validation = split_train(xtr, ytr, TRAIN_SIZES[name], split_seed)
    sizes = {"train": len(train), "validation": len(validation), "test": len(yte)}
    small = [f"{k} {v} (need {MIN_SPLIT[k]})" for k, v in sizes.items() if v < MIN_SPLIT[k]]
    if small:
        raise DataError(f"{name} from {source} is too small to train and validate on: "
                        f"{', '.join(small)} images")
    mean, std = NORMALISATION[name]
    return Dataset(name, train, validation, Split(xte, yte), mean, std, 10, source)


def describe_sources(data_dir: str | Path | None = None) -> list[dict]:
    """One row per dataset: where it would be read from, or why it cannot be."""
    rows = []
    for name in DATASETS:
        try:
            xtr, _, xte, _, source = read_arrays(name, data_dir) if _has_local(name, data_dir) else \
                (None, None, None, None, None)
            if source is None:
                rows.append({"dataset": name, "status": "missing", "source": f"supply {RAW_HINT[name]}"})
            else:
                rows.append({"dataset": name, "status": f"ok: {len(xtr)} train + {len(xte)} test",
                             "source": source})
        except DataError as e:
            rows.append({"dataset": name, "status": "broken", "source": str(e)})
    return rows


def _has_local(name: str, data_dir) -> bool:
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    for folder in _candidates(name, root):
        if name == "cifar10":
            if any(folder.glob("cifar-10-*")) or any(folder.glob("*.tar*")) or (folder / "train").is_dir():
                return True
        elif any(raw._find_idx(folder, s) for s in raw.IDX_FILES):
            return True
    return tfds_source.prepared_dir(name, root) is not None


def subset(images: np.ndarray, labels: np.ndarray, size: int, seed: int = 0):
    """A fixed, seeded subset (the whole split when ``size`` >= its length)."""
    if size >= len(labels):
        return images, labels
    idx = np.random.default_rng(seed).permutation(len(labels))[:size]
    return images[idx], labels[idx]


__all__ = ["DATASETS", "Dataset", "Split", "load_dataset", "describe_sources",
           "default_data_dir", "read_arrays", "subset"]
