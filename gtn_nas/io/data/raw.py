"""Readers for the standard raw files people download: IDX ``.gz`` (MNIST, Fashion-MNIST), the
CIFAR-10 python pickles (tar or extracted batches), and ImageFolder trees or tars of them.

Every reader returns ``(train_images, train_labels, test_images, test_labels)`` as uint8 NHWC and
int32, or None when its files are not there; files that are there but broken raise DataError
naming the file, because a silently skipped corrupt file would look like "not downloaded".

Archives are read to their last byte (``tar_files``): Python's tarfile ends its listing in
silence at a damaged header, so a flipped byte late in a ``.tar.xz`` used to give a partial test
set; reading on to the end also makes the decompressor check the stream's checksum.
"""

from __future__ import annotations

import gzip
import io
import lzma
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np

from gtn_nas.errors import DataError

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
# sha256 of the official files' decompressed bytes (the same files tfds checksums). The two data
# sets share file names, so a folder of one given for the other would load silently without this.
KNOWN_IDX = {
    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db": ("mnist", IDX_FILES[0]),
    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5": ("mnist", IDX_FILES[1]),
    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7": ("mnist", IDX_FILES[2]),
    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2": ("mnist", IDX_FILES[3]),
    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888": ("fashion_mnist", IDX_FILES[0]),
    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9": ("fashion_mnist", IDX_FILES[1]),
    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b": ("fashion_mnist", IDX_FILES[2]),
    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34": ("fashion_mnist", IDX_FILES[3]),
}


def check_identity(data: bytes, path: Path, name: str | None, stem: str) -> None:
    """Refuses a standard file of another data set (or another split); unknown files pass."""
    import hashlib

    known = KNOWN_IDX.get(hashlib.sha256(data).hexdigest())
    if name is None or known is None or known == (name, stem):
        return
    raise DataError(f"{path} is {known[0]}'s {known[1]}, not {name}'s {stem}; point --data-dir "
                    f"at the {name} files")


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is truncated or not a valid gzip file ({e}); download it again") from None


def parse_idx(data: bytes, path: Path) -> np.ndarray:
    """IDX format: 2 zero bytes, a type code (0x08 = uint8), the rank, big-endian int32 dims."""
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX uint8 file (bad magic number)")
    rank = data[3]
    header = 4 + 4 * rank
    if len(data) < header:
        raise DataError(f"{path} is truncated (header)")
    dims = struct.unpack(f">{rank}i", data[4:header])
    size = int(np.prod(dims))
    if len(data) - header != size:
        raise DataError(f"{path} is truncated or padded: header says {size} values, file has "
                        f"{len(data) - header}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def read_idx_folder(folder: Path, name: str | None = None) -> Arrays | None:
    """The four IDX files (``.gz`` or uncompressed); None if none is present, an error if some are.

    ``name``: the data set asked for; the official files of another one are refused."""
    paths = [_find_idx(folder, s) for s in IDX_FILES]
    if not any(paths):
        return None
    missing = [s + ".gz" for s, p in zip(IDX_FILES, paths) if p is None]
    if missing:
        raise DataError(f"{folder} has only some of the IDX files; missing {', '.join(missing)}")
    contents = [_read_bytes(p) for p in paths]
    for data, p, stem in zip(contents, paths, IDX_FILES):
        check_identity(data, p, name, stem)
    xtr, ytr, xte, yte = (parse_idx(data, p) for data, p in zip(contents, paths))
    for x, y, p in ((xtr, ytr, paths[0]), (xte, yte, paths[2])):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{p}: {len(x)} images but {len(y)} labels; the files do not belong together")
    return xtr[..., None], ytr.astype(np.int32), xte[..., None], yte.astype(np.int32)


ARCHIVE_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError)


def tar_files(path: Path, wanted) -> list[tuple[str, bytes]]:
    """(name, bytes) of the files of the tar ``path`` (any compression) for which
    ``wanted(name)`` holds, after checking that the archive is whole: its listing ends at the
    end-of-archive marker, and its compressed stream reads to the end with a good checksum."""
    found = []
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                if m.isfile() and wanted(m.name):
                    found.append((m.name, tar.extractfile(m).read()))
            end = tar.offset  # where the listing stopped
            tar.fileobj.seek(end)
            tail = tar.fileobj.read()  # to the end of the stream: the decompressor's CRC check
    except ARCHIVE_ERRORS as e:
        raise DataError(f"{path} is truncated or damaged ({e}); download it again") from None
    if tail.strip(b"\0"):
        raise DataError(f"{path} is damaged: its listing stops at byte {end:,} of "
                        f"{end + len(tail):,} (a bad entry header); download it again")
    return found


def _cifar_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = pickle.loads(raw, encoding="bytes")
        x = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        y = np.asarray(d[b"labels"], np.int32)
    except Exception as e:  # pickle raises many types on bad bytes
        raise DataError(f"{where} is not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} images but {len(y)} labels")
    return np.ascontiguousarray(x), y


def _join_batches(batches: dict[str, tuple[np.ndarray, np.ndarray]], where: str) -> Arrays:
    names = [f"data_batch_{i}" for i in range(1, 6)]
    missing = [n for n in names + ["test_batch"] if n not in batches]
    if missing:
        raise DataError(f"{where} lacks CIFAR-10 batches {', '.join(missing)}")
    xtr = np.concatenate([batches[n][0] for n in names])
    ytr = np.concatenate([batches[n][1] for n in names])
    return xtr, ytr, *batches["test_batch"]


def read_cifar_python(folder: Path) -> Arrays | None:
    """``cifar-10-python.tar.gz`` or an extracted ``cifar-10-batches-py/`` (or the batches themselves)."""
    for d in (folder / "cifar-10-batches-py", folder):
        if (d / "data_batch_1").is_file():
            batches = {p.name: _cifar_batch(p.read_bytes(), str(p))
                       for p in d.iterdir() if p.name.startswith(("data_batch_", "test_batch"))}
            return _join_batches(batches, str(d))
    tar_path = folder / "cifar-10-python.tar.gz"
    if not tar_path.is_file():
        return None
    files = tar_files(tar_path, lambda n: Path(n).name.startswith(("data_batch_", "test_batch")))
    batches = {Path(n).name: _cifar_batch(raw, f"{tar_path}:{n}") for n, raw in files}
    return _join_batches(batches, str(tar_path))


def _decode(raw: bytes, where: str) -> np.ndarray:
    from PIL import Image

    try:
        img = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), np.uint8)
    except Exception as e:
        raise DataError(f"{where} is not a readable image ({e})") from None
    return img


def _stack(items: list[tuple[str, str, bytes]], classes: tuple[str, ...], where: str) -> Arrays:
    """items: (split, class name, file name, encoded bytes) -> arrays, files in sorted order per split."""
    out = {}
    for split in ("train", "test"):
        rows = sorted((c, raw_name, raw) for s, c, raw_name, raw in items if s == split)
        if not rows:
            raise DataError(f"{where} has no {split}/<class>/*.jpg images (ImageFolder layout expected)")
        unknown = sorted({c for c, _, _ in rows} - set(classes))
        if unknown:
            raise DataError(f"{where}: unknown class folders {unknown}; expected {list(classes)}")
        x = np.stack([_decode(raw, f"{where}:{split}/{c}/{n}") for c, n, raw in rows])
        y = np.asarray([classes.index(c) for c, _, _ in rows], np.int32)
        out[split] = (x, y)
    return (*out["train"], *out["test"])


def read_image_folder(folder: Path, classes: tuple[str, ...] = CIFAR10_CLASSES) -> Arrays | None:
    """An ImageFolder tree ``{train,test}/<class>/*.jpg`` or a tar (any compression) holding one."""
    tree = next((d for d in (folder, folder / "cifar10") if (d / "train").is_dir()), None)
    if tree is not None:
        items = [(p.parts[-3], p.parts[-2], p.name, p.read_bytes())
                 for p in tree.glob("*/*/*") if p.suffix.lower() in IMAGE_SUFFIXES]
        return _stack(items, classes, str(tree))
    tars = sorted(p for p in folder.glob("*.tar*") if "python" not in p.name)
    if not tars:
        return None
    def image(name: str) -> bool:
        parts = Path(name).parts
        return (len(parts) >= 3 and Path(name).suffix.lower() in IMAGE_SUFFIXES
                and parts[-3] in ("train", "test"))

    items = [(*Path(n).parts[-3:], raw) for n, raw in tar_files(tars[0], image)]
    return _stack(items, classes, str(tars[0]))
