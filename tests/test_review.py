"""Regressions from the code review and bad-input sweep (issue #23) that have no better home."""

import jax
import pytest

from gtn_nas.io.checkpoint import Checkpointer
from gtn_nas.config import MetaTrainConfig, build_config, save_config
from gtn_nas.io.data.base import DATASETS, IMAGE_SHAPES
from gtn_nas.meta.outer import init_meta_state
from gtn_nas.meta.gtn import load_gtn


@pytest.mark.parametrize("dataset", DATASETS)
def test_load_gtn_builds_the_teacher_of_the_run_s_dataset(tmp_path, dataset):
    cfg = build_config(MetaTrainConfig, "tiny", dict(out=str(tmp_path), dataset=dataset))
    save_config(cfg, tmp_path / "config.json")
    from gtn_nas.meta.gtn import build_teacher

    teacher = build_teacher(cfg, IMAGE_SHAPES[dataset], 10)
    ckpt = Checkpointer(tmp_path / "checkpoints")
    ckpt.save(1, init_meta_state(cfg, teacher, jax.random.PRNGKey(0)))
    ckpt.close()
    _, loaded, meta, step = load_gtn(tmp_path)
    assert step == 1
    x, _ = loaded.generate(meta, jax.random.PRNGKey(1))
    assert tuple(x.shape[2:]) == IMAGE_SHAPES[dataset]


def test_the_official_files_of_another_dataset_are_refused(shared_data):
    from gtn_nas.io.data import load_dataset
    from gtn_nas.errors import DataError

    with pytest.raises(DataError, match="is mnist's train-images-idx3-ubyte, not fashion_mnist's"):
        load_dataset("fashion_mnist", shared_data / "mnist")
    assert load_dataset("mnist", shared_data / "mnist").train.images.shape[1:] == (28, 28, 1)


def test_a_dataset_too_small_to_validate_on_is_an_error(tmp_path):
    import numpy as np

    from conftest import _write_idx
    from gtn_nas.io.data import load_dataset
    from gtn_nas.errors import DataError

    (tmp_path / "mnist").mkdir()
    for prefix, n in (("train", 2), ("t10k", 2)):
        _write_idx(tmp_path / "mnist" / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n, 28, 28)))
        _write_idx(tmp_path / "mnist" / f"{prefix}-labels-idx1-ubyte.gz", np.zeros(n))
    with pytest.raises(DataError, match=r"too small .*validation 0 \(need 1\)"):
        load_dataset("mnist", tmp_path)


# ----------------------------------------------------------------------------- outputs, errors

from typer.testing import CliRunner  # noqa: E402

import cli  # noqa: E402

runner = CliRunner()


def _error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize("command", ["meta-train", "search", "evaluate", "retrain", "rank", "show"])
def test_an_output_that_cannot_be_written_is_refused_first(command, gtn_run, fake_mnist, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    data = ["--data-dir", str(fake_mnist)]
    args = {
        "meta-train": ["meta-train", "--preset", "tiny", "--out", str(blocker), *data],
        "search": ["search", "--gtn", str(gtn_run), "--preset", "tiny", "--out",
                   str(blocker / "s"), *data],
        "evaluate": ["evaluate", "--gtn", str(gtn_run), "--out", str(tmp_path), *data],
        "retrain": ["retrain", "--preset", "tiny", "--arch",
                    "|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|", "--out",
                    str(blocker / "r"), *data],
        "rank": ["rank", str(tmp_path / "search"), "--out", str(blocker / "rank.json")],
        "show": ["show", str(gtn_run)],
    }[command]
    if command == "show":
        (gtn_run / "plots").mkdir(exist_ok=True)
        (gtn_run / "plots").rmdir()
        (gtn_run / "plots").write_text("in the way")
    try:
        line = _error(runner.invoke(cli.app, args + ["--quiet"] * (command != "show")))
    finally:
        if command == "show":
            (gtn_run / "plots").unlink()
    assert "is a file" in line or "is a folder" in line


def test_a_search_refused_for_its_gtn_writes_nothing(gtn_run, fake_mnist, tmp_path):
    out = tmp_path / "search"
    line = _error(runner.invoke(cli.app, ["search", "--gtn", str(gtn_run), "--dataset",
                                          "fashion_mnist", "--preset", "tiny", "--out", str(out),
                                          "--data-dir", str(fake_mnist), "--quiet"]))
    assert "meta-trained on mnist, not fashion_mnist" in line
    assert not out.exists()  # so the corrected command is not refused as a config change


def test_a_corrupt_checkpoint_is_one_line_on_stderr(gtn_run, fake_mnist, tmp_path):
    """orbax/tensorstore used to print asyncio 'Event loop is closed' tracebacks around it."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    run = tmp_path / "run"
    shutil.copytree(gtn_run, run)
    shutil.rmtree(run / "best", ignore_errors=True)
    step = max((p for p in (run / "checkpoints").iterdir() if p.name.isdigit()),
               key=lambda p: int(p.name))
    biggest = max((f for f in step.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
    done = subprocess.run(
        [sys.executable, "-c", "import cli; cli.main()", "evaluate", "--gtn", str(run),
         "--data-dir", str(fake_mnist), "--quiet"], capture_output=True, text=True, timeout=300,
        cwd=Path(__file__).resolve().parents[1], env=dict(os.environ, GTN_NAS_XLA_CACHE=""))
    assert done.returncode == 2
    lines = [l for l in done.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "unreadable" in lines[0], done.stderr


def test_the_validator_takes_the_split_as_an_argument_not_a_constant(fake_mnist):
    """Closed over, the validation images became a constant of the compiled program (138 MB
    for CIFAR-10); as an argument the lowered program holds no array of their size."""
    import jax.numpy as jnp

    from gtn_nas.io.data import load_dataset
    from gtn_nas.meta.gtn import build_learner_source, build_teacher
    from gtn_nas.commands.meta_train import make_validator

    cfg = build_config(MetaTrainConfig, "tiny", dict(out="unused"))
    data = load_dataset("mnist", fake_mnist)
    teacher = build_teacher(cfg, data.image_shape, 10)
    source = build_learner_source(cfg, data.image_shape, 10)
    meta = init_meta_state(cfg, teacher, jax.random.PRNGKey(0)).meta_params
    images, labels = jnp.asarray(data.validation.images), jnp.asarray(data.validation.labels)
    validate = make_validator(teacher, source, data.mean, data.std)
    text = validate.lower(meta, jax.random.PRNGKey(1), None, images, labels).as_text()
    split = f"tensor<{len(labels)}x28x28x1xui8>"
    assert split in text  # the split is in the program, as a parameter ...
    assert [l for l in text.splitlines() if "constant" in l and split in l] == []  # ... not baked
    assert 0 <= float(validate(meta, jax.random.PRNGKey(1), None, images, labels)) <= 1


def test_python_dash_m_gtn_nas_is_the_command_line():
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-m", "gtn_nas", "--help"], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert "meta-train" in done.stdout and "search" in done.stdout


def test_the_meta_step_compiles_once_over_several_steps(fake_mnist):
    """Strong dtypes in the initial state and a donated, same-shaped result: the second and later
    outer steps reuse the first step's program (a retrace would recompile the second-order step)."""
    import jax.numpy as jnp

    from gtn_nas.io.data import load_dataset
    from gtn_nas.meta.gtn import build_learner_source, build_teacher
    from gtn_nas.meta import exact_meta_step

    cfg = build_config(MetaTrainConfig, "tiny", dict(out="unused"))
    data = load_dataset("mnist", fake_mnist)
    teacher = build_teacher(cfg, data.image_shape, 10)
    source = build_learner_source(cfg, data.image_shape, 10)
    step = jax.jit(exact_meta_step(cfg, teacher, source, data.mean, data.std), donate_argnums=0)
    state = init_meta_state(cfg, teacher, jax.random.PRNGKey(0))
    images, labels = jnp.asarray(data.train.images), jnp.asarray(data.train.labels)
    for i in range(4):
        state, _ = step(state, None, jax.random.PRNGKey(i), images, labels)
    assert step._cache_size() == 1


def test_after_a_failed_restore_asyncio_unretrieved_reads_are_not_reported(tmp_path, caplog):
    """The corrupt-checkpoint test above, made deterministic: a failed restore's sibling reads
    end as futures whose exception nobody retrieves, and asyncio logs each one on collection."""
    import asyncio
    import gc
    import logging
    import shutil

    import numpy as np

    from gtn_nas.errors import CheckpointError

    ckpt = Checkpointer(tmp_path / "c")
    ckpt.save(1, {"w": np.ones(3, np.float32)})
    shutil.rmtree(tmp_path / "c" / "1" / "default")  # unreadable
    with pytest.raises(CheckpointError, match="unreadable"):
        ckpt.restore(1, {"w": np.ones(3, np.float32)})
    caplog.set_level(logging.ERROR, logger="asyncio")
    loop = asyncio.new_event_loop()
    fut = loop.create_future()
    fut.set_exception(ValueError("OUT_OF_RANGE: a sibling read"))
    del fut
    gc.collect()
    loop.close()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
    logging.getLogger("asyncio").error("something else")  # other asyncio errors still show
    assert [r.getMessage() for r in caplog.records] == ["something else"]

