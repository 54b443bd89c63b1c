"""Regressions from the code review and bad-input sweep (issue #23) that have no better home."""

import jax
import pytest

from gtn_nas.checkpoint import Checkpointer
from gtn_nas.config import MetaTrainConfig, build_config, save_config
from gtn_nas.data.base import DATASETS, IMAGE_SHAPES
from gtn_nas.meta_train import init_meta_state, load_gtn


@pytest.mark.parametrize("dataset", DATASETS)
def test_load_gtn_builds_the_teacher_of_the_run_s_dataset(tmp_path, dataset):
    cfg = build_config(MetaTrainConfig, "meta-train", "tiny", dict(out=str(tmp_path), dataset=dataset))
    save_config(cfg, tmp_path / "config.json")
    from gtn_nas.meta_train import build_teacher

    teacher = build_teacher(cfg, IMAGE_SHAPES[dataset], 10)
    ckpt = Checkpointer(tmp_path / "checkpoints")
    ckpt.save(1, init_meta_state(cfg, teacher, jax.random.PRNGKey(0)))
    ckpt.close()
    _, loaded, meta, step = load_gtn(tmp_path)
    assert step == 1
    x, _ = loaded.generate(meta, jax.random.PRNGKey(1))
    assert tuple(x.shape[2:]) == IMAGE_SHAPES[dataset]


def test_the_official_files_of_another_dataset_are_refused(shared_data):
    from gtn_nas.data import load_dataset
    from gtn_nas.errors import DataError

    with pytest.raises(DataError, match="is mnist's train-images-idx3-ubyte, not fashion_mnist's"):
        load_dataset("fashion_mnist", shared_data / "mnist")
    assert load_dataset("mnist", shared_data / "mnist").train.images.shape[1:] == (28, 28, 1)


def test_a_dataset_too_small_to_validate_on_is_an_error(tmp_path):
    import numpy as np

    from conftest import _write_idx
    from gtn_nas.data import load_dataset
    from gtn_nas.errors import DataError

    (tmp_path / "mnist").mkdir()
    for prefix, n in (("train", 2), ("t10k", 2)):
        _write_idx(tmp_path / "mnist" / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n, 28, 28)))
        _write_idx(tmp_path / "mnist" / f"{prefix}-labels-idx1-ubyte.gz", np.zeros(n))
    with pytest.raises(DataError, match=r"too small .*validation 0 \(need 1\)"):
        load_dataset("mnist", tmp_path)
