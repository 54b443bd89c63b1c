"""Issue #40's fault and bad-input sweep, one regression test (or more) per case, grouped by its
ten classes: damage outside the run, two runs on one folder, a stop that changes the result,
damaged inputs, invalid values, results lost after the work, tracebacks, orphans, misleading
messages, and a `tiny` preset that is not tiny."""

import contextlib
import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from typer.testing import CliRunner

import cli
from gtn_nas.commands.meta_train import meta_train
from gtn_nas.config import (EvaluateConfig, MetaTrainConfig, RetrainConfig, SearchConfig,
                            build_config, load_config, save_config)
from gtn_nas.errors import ArchitectureError, CheckpointError, ConfigError, DataError, GtnError
from gtn_nas.io.checkpoint import Checkpointer
from gtn_nas.io.files import OutputError, save_result, write_atomic
from gtn_nas.io.runs import LOCK_FILE, MetricsLog, RunLocked, hold_lock
from gtn_nas.io.signals import (deferred_interrupts, die_with_parent, raise_if_received_since,
                                received, stop_on_signals)
from gtn_nas.meta.gtn import load_gtn

pytestmark = pytest.mark.usefixtures("xla_disk_cache")
runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
NB201_CELL = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"


def _error(result, code: int = 2) -> str:
    """The one `error:` line of a failed command (no traceback, no usage box)."""
    assert result.exit_code == code, (result.output, result.exception)
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _tiny(out, data_dir, **kw):
    return build_config(MetaTrainConfig, "tiny", dict(out=str(out), data_dir=str(data_dir), **kw))


@pytest.fixture(scope="module")
def params_search(fake_mnist, tmp_path_factory):
    """A finished 3-architecture search scored by parameter count (no GTN needed)."""
    from gtn_nas.commands.search import search

    out = tmp_path_factory.mktemp("faults") / "search"
    search(build_config(SearchConfig, "tiny", dict(
        out=str(out), proxies=("params",), dataset="mnist", data_dir=str(fake_mnist), budget=3,
        channels=2)))
    return out


# ------------------------------------------------------------------ 1. damage outside the run

@pytest.mark.parametrize("command", ["rank", "evaluate", "meta-train", "retrain"])
def test_an_output_that_is_a_special_file_is_refused_and_left_as_it_was(
        command, tmp_path, gtn_run, params_search, fake_mnist):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "null"
    link.symlink_to(os.devnull)
    for target in (fifo, link):
        args = {"rank": ["rank", str(params_search), "--truth", f"{params_search}:params"],
                "evaluate": ["evaluate", "--gtn", str(gtn_run), "--data-dir", str(fake_mnist)],
                "meta-train": ["meta-train", "--preset", "tiny", "--data-dir", str(fake_mnist)],
                "retrain": ["retrain", "--preset", "tiny", "--arch", NB201_CELL, "--data-dir",
                            str(fake_mnist)]}[command]
        line = _error(runner.invoke(cli.app, args + ["--out", str(target), "--quiet"]))
        assert "is a fifo" in line or "is a character device" in line or "is a file" in line
    assert os.path.exists(os.devnull) and not os.path.isfile(os.devnull)
    assert fifo.is_fifo() and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "null"]  # no plots/ beside


def test_write_atomic_never_replaces_a_special_file(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is a fifo, not a regular file"):
        write_atomic(fifo, "x")
    assert fifo.is_fifo()


def test_rank_plots_go_to_the_search_not_beside_the_named_file(params_search, tmp_path):
    out = tmp_path / "elsewhere" / "rank.json"
    result = runner.invoke(cli.app, ["rank", str(params_search), "--truth",
                                     f"{params_search}:params", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["rank.json"]
    assert (params_search / "plots" / "rank_params.png").is_file()


# ------------------------------------------------------------------ 2. two runs on one folder

@pytest.mark.parametrize("command", ["meta-train", "retrain", "search"])
def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_first(
        command, tmp_path, fake_mnist, gtn_run):
    out = tmp_path / "run"
    lock = out / (".shard-0-of-1.lock" if command == "search" else LOCK_FILE)
    held = hold_lock(lock, "the first run")  # as a first command still running holds it
    try:
        args = {"meta-train": ["meta-train", "--preset", "tiny"],
                "retrain": ["retrain", "--preset", "tiny", "--arch", NB201_CELL],
                "search": ["search", "--gtn", str(gtn_run), "--preset", "tiny", "--channels",
                           "2"]}[command]
        line = _error(runner.invoke(cli.app, args + ["--out", str(out), "--data-dir",
                                                     str(fake_mnist), "--quiet"]))
        assert f"pid {os.getpid()} on " in line and "is already running" in line
        assert not (out / "metrics.jsonl").exists() and not (out / "results.sqlite").exists()
    finally:
        held.close()


def test_meta_train_holds_its_folder_s_lock_while_it_runs(tmp_path, fake_mnist):
    from gtn_nas.io.ui import Reporter

    out = tmp_path / "run"
    seen = []

    class Probe(Reporter):  # tries the lock while the run is in progress
        @contextlib.contextmanager
        def progress(self, *args, **kwargs):
            with pytest.raises(RunLocked) as e:
                hold_lock(out / LOCK_FILE, "a second meta-train")
            seen.append(str(e.value))
            with super().progress(*args, **kwargs) as bar:
                yield bar

    meta_train(_tiny(out, fake_mnist, iterations=1), reporter=Probe(quiet=True))
    assert seen and f"pid {os.getpid()}" in seen[0]
    hold_lock(out / LOCK_FILE, "after the run").close()  # released at the end


# ------------------------------------------------------------------ 3. a stop that changes the result

def _log(out):
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]


def test_stops_by_time_budget_with_rollback_on_end_as_an_uninterrupted_run(tmp_path, fake_mnist):
    """One outer step per invocation, rollback on: the stops validate nothing off schedule, so
    meta-parameters, log, best step and rollbacks all equal the uninterrupted run's."""
    kw = dict(iterations=8, eval_every=2, log_every=3, checkpoint_every=4, rollback_drop=0.01)
    ref = meta_train(_tiny(tmp_path / "ref", fake_mnist, **kw))
    assert ref["rollbacks"], "the reference should roll back at least once to test anything"
    out = tmp_path / "stopped"
    stops = 0
    while True:
        s = meta_train(_tiny(out, fake_mnist, time_budget=1e-9, **kw))
        if s["stopped"] is None:
            break
        stops += 1
    assert stops == 7
    for key in ("best_step", "best_validation_accuracy", "rollbacks", "validation_accuracy",
                "inner_lr", "inner_momentum", "final_meta_loss"):
        assert s[key] == ref[key], key
    assert _log(out) == _log(tmp_path / "ref")
    a, b = load_gtn(out, "last")[2], load_gtn(tmp_path / "ref", "last")[2]
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_ctrl_c_right_after_a_validation_row_keeps_the_best_state_it_set(tmp_path, fake_mnist,
                                                                          monkeypatch):
    """The reading, its metrics row and the best state it sets are one step: a Ctrl-C landing
    between the row and the best state used to leave a resumed run with an older best."""
    kw = dict(iterations=6, eval_every=3, log_every=1)
    ref = meta_train(_tiny(tmp_path / "ref", fake_mnist, **kw))
    real_write, fired = MetricsLog.write, []

    def write(self, rows):
        real_write(self, rows)
        rows = list(rows)
        if any("val_acc" in r for r in rows) and not fired:
            fired.append(rows[0]["step"])
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C just after the row is on disk
            time.sleep(0.05)

    monkeypatch.setattr(MetricsLog, "write", write)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        meta_train(_tiny(out, fake_mnist, **kw))
    monkeypatch.undo()
    assert fired == [3]
    again = meta_train(_tiny(out, fake_mnist, **kw))
    for key in ("best_step", "best_validation_accuracy", "validation_accuracy"):
        assert again[key] == ref[key], key
    assert _log(out) == _log(tmp_path / "ref")


# ------------------------------------------------------------------ 4. damaged inputs

def _fake_cifar_tar(path: Path, per_split=(20, 10), compression="xz"):
    import io

    from PIL import Image

    from gtn_nas.io.data.raw import CIFAR10_CLASSES

    rng = np.random.default_rng(0)
    with tarfile.open(path, f"w:{compression}" if compression else "w") as tar:
        for split, n in zip(("train", "test"), per_split):
            for i in range(n):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
                info = tarfile.TarInfo(f"{split}/{CIFAR10_CLASSES[i % 10]}/{i:04d}.jpg")
                info.size = len(buf.getvalue())
                tar.addfile(info, io.BytesIO(buf.getvalue()))


@pytest.mark.parametrize("where", [0.5, 0.97])
def test_a_flipped_byte_in_a_compressed_image_archive_is_refused(tmp_path, where, monkeypatch):
    from gtn_nas.io.data import read_arrays

    monkeypatch.setenv("GTN_NAS_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "cifar10"
    folder.mkdir()
    _fake_cifar_tar(folder / "images.tar.xz")
    assert len(read_arrays("cifar10", tmp_path)[1]) == 20
    data = bytearray((folder / "images.tar.xz").read_bytes())
    data[int(where * len(data))] ^= 0xFF
    (folder / "images.tar.xz").write_bytes(bytes(data))
    with pytest.raises(DataError, match="truncated or damaged"):
        read_arrays("cifar10", tmp_path)


def test_a_tar_whose_listing_stops_at_a_bad_header_is_refused(tmp_path):
    from gtn_nas.io.data.raw import read_image_folder

    _fake_cifar_tar(tmp_path / "images.tar", compression="")
    with tarfile.open(tmp_path / "images.tar") as tar:
        offset = tar.getmembers()[25].offset
    data = bytearray((tmp_path / "images.tar").read_bytes())
    data[offset + 150] ^= 0xFF  # the header's checksum field: tarfile stops listing there
    (tmp_path / "images.tar").write_bytes(bytes(data))
    with tarfile.open(tmp_path / "images.tar") as tar:
        assert len(tar.getmembers()) == 25  # what used to be read, in silence
    with pytest.raises(DataError, match="listing stops at byte"):
        read_image_folder(tmp_path)


def test_a_data_set_short_of_its_official_size_is_refused_unless_asked_for(tmp_path, monkeypatch):
    from gtn_nas.io.data import describe_sources, read_arrays

    monkeypatch.setenv("GTN_NAS_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cifar10").mkdir()
    _fake_cifar_tar(tmp_path / "cifar10" / "images.tar.xz")
    monkeypatch.delenv("GTN_NAS_PARTIAL_DATA")
    with pytest.raises(DataError, match=r"has 20 train \+ 10 test images, not the official "
                                        r"50,000 \+ 10,000.*GTN_NAS_PARTIAL_DATA=1"):
        read_arrays("cifar10", tmp_path)
    rows = {r["dataset"]: r for r in describe_sources(tmp_path)}
    assert rows["cifar10"]["status"] == "broken"  # `gtn-nas datasets` does not say ok
    monkeypatch.setenv("GTN_NAS_PARTIAL_DATA", "1")
    assert len(read_arrays("cifar10", tmp_path)[3]) == 10


def _nb201_table(path: Path, keep=None, edit=None):
    from search_spaces import get_space

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["CIFAR10TestAccuracy200Epochs", "CIFAR100TestAccuracy200Epochs",
                    "ImageNetTestAccuracy200Epochs", "ArchitectureString", "UniqueString"])
        for k, g in enumerate(get_space("nb201").enumerate()):
            if keep is not None and k >= keep:
                break
            row = [50 + k % 40, 30.0, 20.0, g.to_str(), "u"]
            w.writerow(edit(k, row) if edit else row)


def test_a_cut_or_edited_nb201_table_is_refused(tmp_path):
    from gtn_nas.commands.rank import nb201_truth

    table = tmp_path / "nb201" / "nb201_cifar_accuracy.csv"
    _nb201_table(table)
    assert len(nb201_truth(tmp_path)) == 15_625
    _nb201_table(table, keep=7_812)
    with pytest.raises(DataError, match="holds 7,812 cells, not NAS-Bench-201's 15,625"):
        nb201_truth(tmp_path)
    _nb201_table(table, edit=lambda k, r: ["n/a" if k == 9 else r[0]] + r[1:])
    with pytest.raises(DataError, match="line 11: CIFAR10TestAccuracy200Epochs is 'n/a'"):
        nb201_truth(tmp_path)
    _nb201_table(table, edit=lambda k, r: r[:3] + ([r[3].replace("none", "skip_connect", 1)]
                                                   if k == 0 else [r[3]]) + r[4:])
    with pytest.raises(DataError, match="appears twice"):
        nb201_truth(tmp_path)


def test_rank_says_how_many_architectures_have_no_truth(params_search, tmp_path):
    """Another search as the truth holds only some of the architectures: said, and counted."""
    from gtn_nas.commands.rank import rank
    from gtn_nas.config import RankConfig
    from gtn_nas.search.store import Store

    partial = tmp_path / "partial"
    shutil.copytree(params_search, partial)
    with sqlite3.connect(partial / "results.sqlite") as db:
        db.execute("DELETE FROM results WHERE idx = 0")

    class Warnings:
        def __init__(self):
            self.seen = []

        def warn(self, m):
            self.seen.append(m)

        def __getattr__(self, name):
            return lambda *a, **k: None

    rep = Warnings()
    summary = rank(RankConfig(search=str(params_search), truth=f"{partial}:params",
                              out=str(tmp_path / "rank.json")), rep)
    assert summary["without_truth"] == 1 and summary["proxies"]["params"]["n"] == 2
    assert any("1 of 3 architectures" in w and "no truth value" in w for w in rep.seen)
    with Store(partial / "results.sqlite") as store:
        assert store.count() == 2


def test_every_flipped_byte_of_a_checkpoint_is_refused_never_loaded(tmp_path):
    tree = {"a": np.arange(3000, dtype=np.float32), "b": np.ones((20, 20), np.float32)}
    ckpt = Checkpointer(tmp_path / "ck")
    ckpt.save(1, tree)
    ckpt.close()
    step = tmp_path / "ck" / "1"
    biggest = max((f for f in step.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
    data = biggest.read_bytes()
    outcomes = []
    for offset in np.linspace(0, len(data) - 1, 12).astype(int):
        flipped = bytearray(data)
        flipped[offset] ^= 0x10
        biggest.write_bytes(bytes(flipped))
        try:
            got = Checkpointer(tmp_path / "ck").restore(1, tree)
            assert all(np.array_equal(got[k], tree[k]) for k in tree), offset  # never changed
            outcomes.append("same")
        except CheckpointError as e:
            outcomes.append("mismatch" if "sha256 mismatch" in str(e) else "unreadable")
    assert "mismatch" in outcomes  # the flips orbax reads back as other numbers


def test_a_flipped_byte_in_model_msgpack_is_refused(tmp_path):
    from gtn_nas.commands.retrain import MODEL_FILE, export_model, load_model
    from gtn_nas.retraining.model import build_model, init_variables, resolve_sizes

    cfg = resolve_sizes(build_config(RetrainConfig, "tiny", dict(
        arch=NB201_CELL, out=str(tmp_path), dataset="mnist", channels=2)))
    save_config(cfg, tmp_path / "config.json")
    variables = init_variables(build_model(cfg, (28, 28, 1), 10), (28, 28, 1),
                               jax.random.PRNGKey(0))
    export_model(tmp_path / MODEL_FILE, variables)
    assert load_model(tmp_path)[3].endswith(MODEL_FILE)
    data = bytearray((tmp_path / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.msgpack is damaged.*sha256 mismatch"):
        load_model(tmp_path)


def test_a_config_json_that_lacks_a_field_is_refused_not_defaulted(gtn_run, tmp_path):
    run = tmp_path / "gtn"
    shutil.copytree(gtn_run, run)
    config = json.loads((run / "config.json").read_text())
    del config["learner_width"]
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="config.json is damaged or from another gtn-nas "
                                              "version: it lacks learner_width"):
        load_gtn(run)
    config["learner_width"], config["bogus"] = 32, 1
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="fields gtn-nas does not know: bogus"):
        load_gtn(run)


# ------------------------------------------------------------------ 5. invalid values

@pytest.mark.parametrize("cls, values, message", [
    (EvaluateConfig, dict(real_lrs=(-1.0,)), "real_lrs must be >= 0"),
    (EvaluateConfig, dict(real_momentums=(5.0,)), r"real_momentums must be in \[0, 1\)"),
    (SearchConfig, dict(real_momentum=5.0), r"real_momentum must be in \[0, 1\)"),
    (MetaTrainConfig, dict(meta_b1=1.5), r"meta_b1 must be in \[0, 1\)"),
    (MetaTrainConfig, dict(meta_b2=1.0), r"meta_b2 must be in \[0, 1\)"),
    (MetaTrainConfig, dict(init_momentum=5.0, momentum_max=0.0), r"init_momentum must be in \[0, 1\)"),
    (MetaTrainConfig, dict(out=""), "out is an empty path"),
    (MetaTrainConfig, dict(meta_eps=0.0), "meta_eps must be > 0"),
    (MetaTrainConfig, dict(intermediate_weight=-1.0), "intermediate_weight must be >= 0"),
    (MetaTrainConfig, dict(seed=-1), "seed must be >= 0"),
    (MetaTrainConfig, dict(split_seed=-3), "split_seed must be >= 0"),
    (SearchConfig, dict(seed=-1), "seed must be >= 0"),
    (RetrainConfig, dict(split_seed=-1), "split_seed must be >= 0"),
    (RetrainConfig, dict(momentum=1.0), r"momentum must be in \[0, 1\)"),
])
def test_each_numeric_option_is_checked_against_its_domain(cls, values, message):
    with pytest.raises(ConfigError, match=message):
        build_config(cls, "tiny" if cls is not EvaluateConfig else None, values)


def test_a_hand_edited_config_of_the_wrong_type_is_refused(tmp_path):
    cfg = build_config(MetaTrainConfig, "tiny", dict(out=str(tmp_path)))
    save_config(cfg, tmp_path / "config.json")
    values = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**values, "inner_steps": "4"}))
    with pytest.raises(CheckpointError, match="inner_steps must be a whole number, got '4'"):
        load_config(MetaTrainConfig, tmp_path / "config.json")


def test_validation_follows_eval_every_whatever_log_every_is(tmp_path, fake_mnist):
    meta_train(_tiny(tmp_path, fake_mnist, iterations=8, eval_every=4, log_every=3))
    assert [r["step"] for r in _log(tmp_path) if "val_acc" in r] == [4, 8]


# ------------------------------------------------------------------ 6. results lost after the work

def test_evaluate_writes_into_a_folder_that_does_not_exist_yet(gtn_run, fake_mnist, tmp_path):
    out = tmp_path / "a" / "new" / "dir" / "eval.json"
    result = runner.invoke(cli.app, ["evaluate", "--gtn", str(gtn_run), "--data-dir",
                                     str(fake_mnist), "--num-seeds", "1", "--no-curve",
                                     "--real-lrs", "0.1", "--real-momentums", "0.5",
                                     "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["num_seeds"] == 1


def test_a_result_that_cannot_be_written_is_kept_and_the_error_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(OutputError) as e:
        save_result(blocked / "evaluate.json", {"figure": 0.9})
    kept = Path(str(e.value).rsplit("kept in ", 1)[1])
    assert kept.parent == tmp_path / "tmp" and json.loads(kept.read_text()) == {"figure": 0.9}


@pytest.fixture
def small_disk(tmp_path):
    """A 160 KB tmpfs: a full disk for real (root and a mountable tmpfs, else skipped)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_during_meta_training_is_one_line_and_the_run_resumes_elsewhere(
        small_disk, tmp_path, fake_mnist):
    """A process of its own: what orbax's threads print on the way out is on its stderr too."""
    out = small_disk / "run"
    args = ["meta-train", "--preset", "tiny", "--data-dir", str(fake_mnist), "--quiet"]
    done = subprocess.run([sys.executable, "-c", "import cli; cli.main()", *args, "--out",
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, GTN_NAS_XLA_CACHE=str(tmp_path / "xla")))
    assert done.returncode == 2, done.stderr
    (line,) = [l for l in done.stderr.splitlines() if l.strip()]
    assert line.startswith("error: cannot save checkpoint 3") and "No space left on device" in line
    assert "free space and run the same command again" in line
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    result = runner.invoke(cli.app, args + ["--out", str(moved)])
    assert result.exit_code == 0, result.output
    assert json.loads((moved / "summary.json").read_text())["outer_steps"] == 6


def test_a_full_disk_keeps_the_result_of_evaluate_elsewhere(small_disk, tmp_path, monkeypatch):
    filler = small_disk / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    with pytest.raises(OutputError, match="No space left on device.*the result is kept in"):
        save_result(small_disk / "evaluate.json", {"figure": 1.0})


# ------------------------------------------------------------------ 7. tracebacks

def test_an_interrupt_during_a_save_waits_for_the_save_to_finish(tmp_path, monkeypatch):
    ckpt = Checkpointer(tmp_path / "ck")
    real_save = ckpt._manager.save

    def interrupted_save(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands in the middle of orbax's save
        time.sleep(0.05)
        return real_save(*a, **k)

    monkeypatch.setattr(ckpt._manager, "save", interrupted_save)
    tree = {"w": np.arange(10, dtype=np.float32)}
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(1, tree)
    monkeypatch.undo()
    ckpt.save(2, tree)  # no FileExistsError on a leftover temporary folder
    assert np.array_equal(ckpt.restore(1, tree)["w"], tree["w"])
    assert not [p for p in (tmp_path / "ck").iterdir() if "tmp" in p.name]
    ckpt.close()


def test_sigterm_is_a_clean_stop_like_ctrl_c_and_a_swallowed_one_is_not_lost():
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stop_on_signals()
    try:
        caught = []
        with pytest.raises(KeyboardInterrupt):
            with deferred_interrupts():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                caught.append("the block ran to its end")
        assert caught
        mark = received()
        try:  # as when the interrupt lands in a garbage-collection callback: printed, dropped
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        except KeyboardInterrupt:
            pass
        with pytest.raises(KeyboardInterrupt):
            raise_if_received_since(mark)  # the loop's next step stops all the same
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def test_sigterm_stops_meta_train_like_ctrl_c_and_the_rerun_finishes(tmp_path, fake_mnist):
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", "import cli; cli.main()", "meta-train", "--preset", "tiny",
           "--iterations", "400", "--checkpoint-every", "1", "--out", str(out), "--data-dir",
           str(fake_mnist), "--quiet"]
    env = dict(os.environ, GTN_NAS_XLA_CACHE=str(tmp_path / "xla"))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (out / "checkpoints" / "2").is_dir():
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        "interrupted; state saved, run the same command again to resume"]
    stopped = load_gtn(out, "last")[3]
    done = subprocess.run(cmd[:-1] + ["--iterations", str(stopped + 2), "--quiet"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    steps = [r["step"] for r in _log(out) if "meta_loss" in r]
    assert steps == list(range(1, stopped + 3))  # each step once


def test_a_locked_results_database_waits_then_says_so(tmp_path):
    from gtn_nas.search.store import Store

    Store(tmp_path / "results.sqlite").close()
    other = sqlite3.connect(tmp_path / "results.sqlite", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        t0 = time.time()
        with pytest.raises(ConfigError, match="is locked by another process .waited 0.3 s."):
            Store(tmp_path / "results.sqlite", timeout=0.3)
        assert time.time() - t0 >= 0.3
    finally:
        other.execute("ROLLBACK")
        other.close()


@pytest.mark.parametrize("text, kind, words", [
    ("attempt to write a readonly database", OutputError, "is read-only"),
    ("database or disk is full", OutputError, "the disk is full"),
    ("database disk image is malformed", CheckpointError, "damaged"),
])
def test_each_sqlite_failure_gets_its_own_message(tmp_path, text, kind, words):
    from gtn_nas.search.store import _db_error

    e = _db_error(sqlite3.OperationalError(text), tmp_path / "results.sqlite", 60)
    assert isinstance(e, kind) and words in str(e)
    assert "new --out" not in str(e) or kind is CheckpointError


@pytest.mark.parametrize("arch", [
    "|nor_conv_3x3~²|+|none~0|none~1|+|none~0|none~1|none~2|",  # int() refuses '²'
    "normal: ٣ 1 0 1 1 1 0 1 1 1 0 1 1 1 0 1 1 1 0 1 | reduce: 0 1 0 1 1 1 0 1 1 1 0 1 1 1 0 1 1 1 0 1",
    "x/" * 300,  # longer than a file name
    "|nor_conv_3x3~0|" * 70_000,  # ~1 MB
])
def test_odd_architecture_strings_are_one_short_line(arch, tmp_path):
    line = _error(runner.invoke(cli.app, ["retrain", "--preset", "tiny", "--arch", arch,
                                          "--out", str(tmp_path / "r"), "--quiet"]))
    assert len(line) < 1000


def test_a_cache_folder_that_is_a_file_is_one_error_unless_it_is_the_default(tmp_path,
                                                                             monkeypatch):
    from gtn_nas.io import data

    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("GTN_NAS_CACHE_DIR", str(tmp_path / "not-a-folder"))
    (tmp_path / "cifar10").mkdir()
    _fake_cifar_tar(tmp_path / "cifar10" / "images.tar.xz")
    with pytest.raises(DataError, match=r"\$GTN_NAS_CACHE_DIR=.* is a file, not a folder"):
        data.read_arrays("cifar10", tmp_path)
    assert (tmp_path / "not-a-folder").read_text() == ""
    monkeypatch.delenv("GTN_NAS_CACHE_DIR")  # the default location, unwritable: done without
    monkeypatch.setattr(data, "cache_dir", lambda: tmp_path / "not-a-folder" / "cache")
    assert len(data.read_arrays("cifar10", tmp_path)[1]) == 20


def test_a_damaged_data_cache_entry_is_rebuilt_not_trusted(tmp_path, monkeypatch):
    from gtn_nas.io.data import read_arrays

    monkeypatch.setenv("GTN_NAS_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cifar10").mkdir()
    _fake_cifar_tar(tmp_path / "cifar10" / "images.tar.xz")
    first = read_arrays("cifar10", tmp_path)[0]
    (entry,) = (tmp_path / "cache").glob("cifar10-*.npz")
    with np.load(entry) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["xtr"] = arrays["xtr"].copy()
    arrays["xtr"][0, 0, 0, 0] ^= 1
    np.savez(entry, **arrays)
    np.testing.assert_array_equal(read_arrays("cifar10", tmp_path)[0], first)


def test_hand_edited_run_files_are_one_error_each(gtn_run, params_search, tmp_path):
    run = tmp_path / "gtn"
    shutil.copytree(gtn_run, run)
    (run / "best").mkdir(exist_ok=True)
    (run / "best" / "best.json").write_text("[]")
    with pytest.raises(CheckpointError, match="best.json is damaged"):
        load_gtn(run)
    shutil.rmtree(run / "best")

    rows = [{"step": 1, "meta_loss": 1.0}, {"step": "x"}, {"step": 2, "meta_loss": 1.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(CheckpointError, match="metrics.jsonl line 2 is damaged: 'step'"):
        MetricsLog(run / "metrics.jsonl", resume_step=2)

    (run / "metrics.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (run / "evaluate.json").write_text("{}")
    line = _error(runner.invoke(cli.app, ["show", str(run)]))
    assert "evaluate.json is damaged: it lacks 'gtn'" in line

    search = tmp_path / "search"
    shutil.copytree(params_search, search)
    with sqlite3.connect(search / "results.sqlite") as db:
        db.execute("UPDATE results SET params = 'many' WHERE idx = 1")
    line = _error(runner.invoke(cli.app, ["rank", str(search), "--truth",
                                          f"{params_search}:params", "--quiet"]))
    assert "row 1 holds 'many' in params" in line


def test_an_unexpected_exception_is_one_line_and_a_saved_traceback(monkeypatch, tmp_path):
    import gtn_nas.commands.show as show

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setattr(show, "show", lambda d: 1 / 0)
    line = _error(runner.invoke(cli.app, ["show", str(tmp_path)]), code=1)
    assert "unexpected ZeroDivisionError" in line and "a bug in gtn-nas" in line
    (trace,) = tmp_path.glob("gtn-nas-crash-*.txt")
    assert "Traceback" in trace.read_text()


# ------------------------------------------------------------------ 8. orphans

def _alive(pid: int) -> bool:
    """Running (a zombie waiting for whoever adopted it to reap it counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_worker_dies_with_its_parent_even_on_kill_9(tmp_path):
    worker = ("import os, time\n"
              "from gtn_nas.io.signals import die_with_parent\n"
              "die_with_parent(int(os.environ['GTN_NAS_PARENT_PID']))\n"
              "print('ready', flush=True)\n"
              "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", (
        "import os, subprocess, sys, time\n"
        "env = dict(os.environ, GTN_NAS_PARENT_PID=str(os.getpid()))\n"
        f"child = subprocess.Popen([sys.executable, '-c', {worker!r}], env=env,"
        " stdout=subprocess.PIPE, text=True)\n"
        "child.stdout.readline()\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n")], cwd=REPO, stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        if not _alive(child):
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the worker outlived its killed parent")


def test_a_rerun_s_worker_waits_for_an_orphan_then_is_refused(tmp_path):
    from gtn_nas.commands.search import claim_shard

    held = claim_shard(tmp_path, 1, 2)  # an orphaned worker of shard 1 of 2, still scoring
    try:
        t0 = time.time()
        with pytest.raises(RunLocked, match="shard 1 of 2"):
            claim_shard(tmp_path, 1, 2, wait=0.5)
        assert time.time() - t0 >= 0.5
    finally:
        held.close()
    claim_shard(tmp_path, 1, 2).close()


# ------------------------------------------------------------------ 9. messages

def test_messages_that_point_the_right_way(gtn_run, fake_mnist, tmp_path):
    line = _error(runner.invoke(cli.app, ["retrain", "--eval-only", "--out", str(gtn_run)]))
    assert "is not a retrain run (its config.json is a meta-training run's)" in line
    assert "augment" not in line

    (tmp_path / "a-file").write_text("")
    line = _error(runner.invoke(cli.app, ["show", str(tmp_path / "a-file")]))
    assert "is a file, not a run directory" in line

    for args, words in ((["-T", "abc"], "'--inner-steps' / '-T'"),
                        (["--iterations", "1e3"], "'--iterations'"),
                        (["--no-such-flag"], "No such option: --no-such-flag")):
        line = _error(runner.invoke(cli.app, ["meta-train", *args]))
        assert words in line and "Usage" not in line

    run = tmp_path / "gtn"
    shutil.copytree(gtn_run, run)
    (run / "best").mkdir(exist_ok=True)
    (run / "best" / "best.json").write_text(json.dumps({"step": 7, "val_acc": 0.5}))
    with pytest.raises(CheckpointError, match="names outer step 7, but .* holds no checkpoint "
                                              "of it .*--checkpoint last"):
        load_gtn(run)


def test_a_search_on_a_read_only_file_system_is_ranked_and_not_resumed(params_search, tmp_path,
                                                                       gtn_run, fake_mnist):
    ro = tmp_path / "ro"
    ro.mkdir()
    done = subprocess.run(f"mount --bind {params_search} {ro} && mount -o remount,ro,bind {ro}",
                          shell=True, capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot bind-mount read-only here (needs root)")
    try:
        result = runner.invoke(cli.app, ["rank", str(ro), "--truth", f"{ro}:params", "--out",
                                         str(tmp_path / "rank.json"), "--plots",
                                         str(tmp_path / "plots"), "--quiet"])
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / "rank.json").read_text())["proxies"]["params"]["n"] == 3
        line = _error(runner.invoke(cli.app, ["search", "--preset", "tiny", "--proxy", "params",
                                              "--dataset", "mnist", "--channels", "2", "--budget",
                                              "4", "--data-dir", str(fake_mnist), "--out", str(ro),
                                              "--quiet"]))
        assert "not writable" in line and "new --out" not in line
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)


def test_non_finite_meta_training_blames_the_setting_that_caused_it(tmp_path, fake_mnist):
    from gtn_nas.errors import NonFiniteError

    out = tmp_path / "run"
    meta_train(_tiny(out, fake_mnist, iterations=2, eval_every=0))
    with pytest.raises(NonFiniteError) as e:  # a meta-lr that blows up a run that was fine
        meta_train(_tiny(out, fake_mnist, iterations=12, eval_every=0, meta_lr=1e30,
                         max_nonfinite=2))
    assert "--meta-lr" in str(e.value) and str(out / "checkpoints") in str(e.value)


# ------------------------------------------------------------------ 10. a tiny preset that is tiny

def test_tiny_micro_meta_training_compiles_one_genotype():
    cfg = build_config(MetaTrainConfig, "tiny", dict(out="x", learner="micro"))
    assert cfg.arch_pool == 1
    assert build_config(MetaTrainConfig, "cpu", dict(out="x", learner="micro")).arch_pool == 8
    result = runner.invoke(cli.app, ["meta-train", "--help"])
    assert "about a minute to compile" in " ".join(result.output.replace("│", " ").split())
