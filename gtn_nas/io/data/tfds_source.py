"""The tensorflow-datasets path: a prepared tfds data dir, or a download when online.

Reading uses ``as_data_source`` (array_record), which needs no TensorFlow; preparing a stock
builder (the download path) does, so that path says so when TensorFlow is missing.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np

from gtn_nas.errors import DataError

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def prepared_dir(name: str, data_dir: Path) -> Path | None:
    """``DATA_DIR/name/<version>/`` (or ``DATA_DIR/<version>/`` when DATA_DIR is named ``name``)."""
    infos = list((data_dir / name).glob("*/dataset_info.json"))
    if data_dir.name == name:
        infos += list(data_dir.glob("*/dataset_info.json"))
    if not infos:
        return None
    version = lambda p: tuple(int(v) for v in p.parent.name.split(".") if v.isdigit())
    return max(infos, key=version).parent


def _records(builder, split: str, where: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        src = builder.as_data_source(split)
        rows = [src[i] for i in range(len(src))]
    except Exception as e:  # tfds raises a wide variety here (format, missing shards, decoding)
        raise DataError(f"tfds data dir {where} cannot be read ({type(e).__name__}: {e}); prepare it "
                        "with file_format='array_record' or point --data-dir at the raw files") from None
    x = np.stack([np.asarray(r["image"], np.uint8) for r in rows])
    y = np.asarray([int(r["label"]) for r in rows], np.int32)
    return (x[..., None] if x.ndim == 3 else x), y


def read_prepared(name: str, data_dir: Path) -> Arrays | None:
    folder = prepared_dir(name, data_dir)
    if folder is None:
        return None
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(str(folder))
    return (*_records(builder, "train", folder), *_records(builder, "test", folder))


def online(host: str = "storage.googleapis.com", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def download(name: str, cache_dir: Path) -> Arrays | None:
    """tfds download-and-prepare into ``cache_dir`` (None when offline or tfds is not installed)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return None
    if not online():
        return None
    try:
        builder = tfds.builder(name, data_dir=str(cache_dir), file_format="array_record")
        builder.download_and_prepare()
    except Exception as e:
        raise DataError(f"tfds could not download {name} into {cache_dir} ({type(e).__name__}: {e}); "
                        "preparing stock tfds datasets needs `pip install tensorflow-cpu`") from None
    return read_prepared(name, cache_dir)
