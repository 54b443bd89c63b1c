"""`gtn-nas retrain` at tiny sizes: architecture resolution, augmentation, resume equality, export
and reload, and one-line CLI errors (exit code 2)."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

import cli
from gtn_nas.commands import retrain as lib
from gtn_nas.config import RetrainConfig, build_config
from gtn_nas.core.images import cutout, random_crop
from gtn_nas.errors import ArchitectureError, ConfigError
from gtn_nas.search.archs import resolve_archs

NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"
MICRO = ("normal: 0 2 1 3, 1 1 2 9, 0 0 3 6, 2 4 1 8, 4 2 5 0 | "
         "reduce: 0 5 1 2, 2 0 1 9, 0 3 2 7, 3 1 0 10, 1 6 4 4")
runner = CliRunner()


def tiny_cfg(out, data_dir, **kw):
    return build_config(RetrainConfig, "tiny", dict(arch=NB201, out=str(out), data_dir=str(data_dir),
                                             channels=2, **kw))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, fake_mnist):
    out = tmp_path_factory.mktemp("runs") / "a"
    summary = lib.retrain(tiny_cfg(out, fake_mnist))
    return out, summary


def _strip_times(rows):
    return [{k: v for k, v in r.items() if k not in ("epoch_seconds", "images_per_second")}
            for r in rows]


# ----------------------------------------------------------------------------- architectures

def test_resolve_strings_files_and_search_dirs(tmp_path):
    (spec,) = resolve_archs(NB201)
    assert (spec.arch, spec.space) == (NB201, "nb201")
    (spec,) = resolve_archs(MICRO)
    assert spec.space == "micro" and spec.arch == MICRO
    (tmp_path / "top").mkdir()
    for rank, arch in ((1, MICRO), (2, NB201)):
        (tmp_path / "top" / f"{rank:02d}.json").write_text(json.dumps({"arch": arch, "score": 0.5}))
    (spec,) = resolve_archs(str(tmp_path / "top" / "02.json"))
    assert (spec.arch, spec.space, spec.rank) == (NB201, "nb201", 2)
    specs = resolve_archs(str(tmp_path), top=5)
    assert [(s.rank, s.space) for s in specs] == [(1, "micro"), (2, "nb201")]
    board = tmp_path / "board"
    board.mkdir()
    (board / "leaderboard.csv").write_text(f"index,arch,space,score\n7,{NB201},nb201,0.9\n")
    assert resolve_archs(str(board), top=3)[0].arch == NB201


@pytest.mark.parametrize("arch, message", [
    ("|nor_conv_3x3~0|+|bogus~0|skip_connect~1|+|none~0|none~1|none~2|", "unknown op"),
    ("resnet50", "cannot tell the search space"),
    ("missing/top/01.json", "does not exist"),
])
def test_bad_architectures(arch, message):
    with pytest.raises(ArchitectureError, match=message):
        resolve_archs(arch)


def test_json_without_genotype(tmp_path):
    path = tmp_path / "01.json"
    path.write_text(json.dumps({"score": 0.9}))
    with pytest.raises(ArchitectureError, match="no genotype"):
        resolve_archs(str(path))


def test_config_presets_and_validation():
    cfg = build_config(RetrainConfig, "paper", dict(arch=NB201, dataset="cifar10"))
    assert (cfg.epochs, cfg.channels, cfg.cells, cfg.cutout, cfg.auxiliary) == (600, 36, 6, 16, True)
    assert cfg.augment == "crop_flip"  # auto on CIFAR-10
    cfg = build_config(RetrainConfig, "cpu", dict(arch=NB201))
    assert (cfg.dataset, cfg.augment) == (None, "auto")  # resolved per architecture
    (spec,) = resolve_archs(NB201)
    one = lib.for_spec(cfg, spec)
    assert (one.dataset, one.augment) == ("mnist", "none")  # auto on MNIST
    with pytest.raises(ConfigError, match="drop_path"):
        RetrainConfig(arch=NB201, drop_path=1.5)


# ----------------------------------------------------------------------------- augmentation

def test_cutout_and_crop(key):
    x = jnp.ones((4, 8, 8, 1))
    holes = jax.jit(cutout, static_argnums=2)(key, x, 4)
    assert holes.shape == x.shape
    zeros = np.asarray(jnp.sum(holes == 0, axis=(1, 2, 3)))
    assert np.all((zeros >= 4) & (zeros <= 16))  # a 4x4 square, clipped at the borders
    images = jnp.arange(4 * 8 * 8, dtype=jnp.int32).reshape(4, 8, 8, 1).astype(jnp.uint8)
    crop = jax.jit(random_crop)
    a, b = crop(key, images), crop(key, images)
    assert a.shape == images.shape and a.dtype == jnp.uint8
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- training

def test_interrupted_run_resumes_to_the_same_result(tmp_path, fake_mnist, finished_run,
                                                    monkeypatch):
    ref_dir, ref = finished_run
    out = tmp_path / "b"
    make_accuracy = lib.make_accuracy

    def interrupting(*args, **kwargs):  # Ctrl-C during epoch 2's validation, before its checkpoint
        accuracy, calls = make_accuracy(*args, **kwargs), []

        def wrapped(*a):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return accuracy(*a)
        return wrapped

    monkeypatch.setattr(lib, "make_accuracy", interrupting)
    with pytest.raises(KeyboardInterrupt):
        lib.retrain(tiny_cfg(out, fake_mnist))
    assert not (out / "summary.json").exists()
    monkeypatch.setattr(lib, "make_accuracy", make_accuracy)
    resumed = lib.retrain(tiny_cfg(out, fake_mnist))

    assert (ref_dir / "model.msgpack").read_bytes() == (out / "model.msgpack").read_bytes()
    for k in ("test_acc", "best_val_acc", "final_val_acc", "params", "steps"):
        assert resumed[k] == ref[k], k
    rows = lambda d: _strip_times(json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines())
    assert rows(out) == rows(ref_dir)
    assert {"config.json", "summary.json", "learning_curve.png", "checkpoints"} <= {
        p.name for p in out.iterdir()}


def test_finished_run_summary_and_eval_only(finished_run):
    out, summary = finished_run
    assert summary["steps"] == 2 * (80 // 16)
    assert summary["params"] > 0 and summary["flops"] > 0 and summary["images_per_second"] > 0
    assert 0.0 <= summary["test_acc"] <= 1.0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["arch"], saved["space"], saved["cells"]) == (NB201, "nb201", 1)
    result = runner.invoke(cli.app, ["retrain", "--eval-only", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert got["test_acc"] == summary["test_acc"] and got["loaded"].endswith("model.msgpack")


def test_changed_config_in_existing_run_dir_is_refused(finished_run, fake_mnist):
    out, _ = finished_run
    with pytest.raises(ConfigError, match="different config"):
        lib.retrain(tiny_cfg(out, fake_mnist, lr=0.5))


# ----------------------------------------------------------------------------- CLI

def _error_line(result):
    """The one `error:` line of a failed command; progress lines may precede it, tracebacks not."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.stderr, result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize("arch, message", [
    ("|nor_conv_3x3~0|+|bogus~0|", "node groups"),
    ("nowhere/01.json", "does not exist"),
])
def test_cli_bad_arch(tmp_path, arch, message):
    result = runner.invoke(cli.app, ["retrain", "--arch", arch, "--out", str(tmp_path / "r"),
                                     "--preset", "tiny"])
    assert message in _error_line(result)


def test_cli_json_without_genotype(tmp_path):
    (tmp_path / "01.json").write_text("{\"score\": 1}")
    result = runner.invoke(cli.app, ["retrain", "--arch", str(tmp_path / "01.json")])
    assert "no genotype" in _error_line(result)


def test_cli_corrupt_checkpoint_and_model(tmp_path, finished_run, fake_mnist):
    src, _ = finished_run
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    for f in (out / "checkpoints").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    result = runner.invoke(cli.app, ["retrain", "--arch", NB201, "--out", str(out), "--preset",
                                     "tiny", "--channels", "2", "--data-dir", str(fake_mnist)])
    assert "unreadable" in _error_line(result)
    (out / "model.msgpack").write_bytes(b"\x00\x01 not msgpack")
    result = runner.invoke(cli.app, ["retrain", "--eval-only", "--out", str(out)])
    assert "model.msgpack" in _error_line(result)
    result = runner.invoke(cli.app, ["retrain", "--eval-only", "--out", str(tmp_path / "none")])
    assert "no retrain run" in _error_line(result)


def test_cli_forwards_config_and_top(tmp_path, monkeypatch):
    seen = []

    def fake_retrain_one(cfg, data, rep, origin=""):
        seen.append(cfg)
        return {"arch": cfg.arch, "params": 1, "best_val_acc": 0.5 + 0.1 * len(seen),
                "test_acc": 0.5, "train_seconds": 0.0}

    monkeypatch.setattr(lib, "retrain_one", fake_retrain_one)
    monkeypatch.setattr(lib, "_load_data", lambda cfg, cache=None: None)
    (tmp_path / "search" / "top").mkdir(parents=True)
    for rank, arch in ((1, NB201), (2, MICRO), (3, NB201)):
        (tmp_path / "search" / "top" / f"{rank:02d}.json").write_text(json.dumps({"arch": arch}))
    result = runner.invoke(cli.app, [
        "retrain", "--arch", str(tmp_path / "search"), "--top", "2", "--preset", "tiny",
        "--out", str(tmp_path / "final"), "--epochs", "3", "--cutout", "4", "--nesterov",
        "--json"])
    assert result.exit_code == 0, result.output
    assert [c.space for c in seen] == ["nb201", "micro"]
    assert [c.out for c in seen] == [str(tmp_path / "final" / n) for n in ("01", "02")]
    first = seen[0]
    assert (first.epochs, first.cutout, first.nesterov, first.batch_size, first.cells) == (
        3, 4, True, 16, 1)
    assert json.loads(result.stdout)["best_rank"] == 2


def test_a_search_result_is_retrained_on_its_dataset_and_sizes(tmp_path):
    """A top/NN.json of a CIFAR-10 search names its dataset and sizes: a retrain without
    --dataset/--channels/--cells uses them (it trained the winner on MNIST before)."""
    path = tmp_path / "01.json"
    path.write_text(json.dumps({"arch": NB201, "space": "nb201", "dataset": "cifar10",
                                "sizes": {"channels": 6, "cells": 2, "input_shape": [32, 32, 3]}}))
    (spec,) = resolve_archs(str(path))
    assert (spec.dataset, spec.channels, spec.cells) == ("cifar10", 6, 2)
    plain = RetrainConfig(arch=str(path))
    one = lib.for_spec(plain, spec)
    assert (one.dataset, one.channels, one.cells, one.augment) == ("cifar10", 6, 2, "crop_flip")
    told = lib.for_spec(RetrainConfig(arch=str(path), dataset="mnist", channels=4), spec)
    assert (told.dataset, told.channels, told.cells) == ("mnist", 4, 2)  # the user's word wins
