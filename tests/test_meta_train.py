"""`meta_train` end to end at the tiny preset: the run directory, Ctrl-C and resume, corrupt
checkpoints, non-finite meta-gradients and config validation.

Every call compiles its own second-order step, so the uninterrupted reference run is shared by
the module and the other tests run only what they must."""

import contextlib
import json
import math
import shutil

import jax
import numpy as np
import pytest

from gtn_nas.io.checkpoint import Checkpointer
from gtn_nas.config import MetaTrainConfig, build_config
from gtn_nas.errors import CheckpointError, ConfigError, NonFiniteError
from gtn_nas.meta.gtn import load_gtn
from gtn_nas.commands.meta_train import meta_train
from gtn_nas.io.ui import Reporter


def tiny(out, data_dir, **kw):
    return build_config(MetaTrainConfig, "tiny",
                        dict(out=str(out), data_dir=str(data_dir), **kw))


pytestmark = pytest.mark.usefixtures("xla_disk_cache")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, fake_mnist):
    out = tmp_path_factory.mktemp("meta") / "ref"
    return out, meta_train(tiny(out, fake_mnist))


def _rows(run_dir):
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_same_meta(a, b):
    flat_a, tree_a = jax.tree_util.tree_flatten(a)
    flat_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b
    for x, y in zip(flat_a, flat_b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def test_run_dir_contents(reference_run):
    out, summary = reference_run
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "metrics.jsonl", "checkpoints", "samples", "summary.json"} <= names
    assert list((out / "samples").glob("*.png"))
    assert (out / "samples" / "curriculum_final.png").stat().st_size > 0
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    config = json.loads((out / "config.json").read_text())
    assert (config["preset"], config["iterations"], config["inner_steps"]) == ("tiny", 6, 4)

    assert summary["outer_steps"] == 6 and summary["nonfinite_steps"] == 0
    assert 0.0 <= summary["validation_accuracy"] <= 1.0
    assert math.isfinite(summary["final_meta_loss"])
    assert len(summary["inner_lr"]) == len(summary["inner_momentum"]) == 4
    rows = _rows(out)
    assert [r["step"] for r in rows if "meta_loss" in r] == [1, 2, 3, 4, 5, 6]
    # eval_every 3 validates at 3 and 6, whatever log_every (2) is
    assert [r["step"] for r in rows if "val_acc" in r] == [3, 6]
    assert all(r["finite"] for r in rows if "meta_loss" in r)

    cfg, teacher, meta, step = load_gtn(out, "last")
    assert step == 6 and cfg == tiny(out, config["data_dir"])
    assert {"lr_logit", "mom_logit"} <= set(meta)  # the presets bound the schedule
    lrs, moms = teacher.schedule(meta)
    np.testing.assert_allclose(np.asarray(lrs), summary["inner_lr"], atol=1e-5)
    assert np.all(np.asarray(moms) < cfg.momentum_max)
    readings = {r["step"]: r["val_acc"] for r in rows if "val_acc" in r}
    assert summary["best_step"] == max(readings, key=readings.get)  # the first of equal ones
    assert summary["best_validation_accuracy"] == max(readings.values())
    assert summary["meta_gradient_spikes"] == 0


class StopAfter(Reporter):
    """Ctrl-C from the progress bar's n-th update (one per log row or validation)."""

    def __init__(self, n):
        super().__init__(quiet=True)
        self.n = n

    @contextlib.contextmanager
    def progress(self, *args, **kwargs):
        with super().progress(*args, **kwargs) as bar:
            update = bar.update

            def interrupting(*a, **k):
                self.n -= 1
                if self.n == 0:
                    raise KeyboardInterrupt
                return update(*a, **k)

            bar.update = interrupting
            yield bar


def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, fake_mnist, reference_run):
    ref_dir, ref_summary = reference_run
    out = tmp_path / "run"
    # Interrupted at outer step 4 (updates at 2, 3 and 4): after the periodic checkpoint at 3,
    # before the next one at 6.
    with pytest.raises(KeyboardInterrupt):
        meta_train(tiny(out, fake_mnist), reporter=StopAfter(3))
    assert not (out / "summary.json").exists()
    _, _, _, step = load_gtn(out, "last")
    assert step == 4  # the exit path saved the state it had

    summary = meta_train(tiny(out, fake_mnist))
    assert summary["outer_steps"] == 6
    _, _, meta, step = load_gtn(out, "last")
    _, _, ref_meta, ref_step = load_gtn(ref_dir, "last")
    assert step == ref_step == 6
    _assert_same_meta(meta, ref_meta)
    assert summary["best_step"] == ref_summary["best_step"]
    _assert_same_meta(load_gtn(out)[2], load_gtn(ref_dir)[2])  # the best states too
    assert summary["final_meta_loss"] == pytest.approx(ref_summary["final_meta_loss"], rel=1e-5)
    assert summary["inner_lr"] == ref_summary["inner_lr"]
    # The resumed log holds each step once, as the uninterrupted one does.
    rows, ref_rows = _rows(out), _rows(ref_dir)
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows]
    for r, q in zip(rows, ref_rows):
        assert r.get("meta_loss", 0) == pytest.approx(q.get("meta_loss", 0), rel=1e-5)
    # Run once more, finished: nothing trains and no second validation row is added.
    again = meta_train(tiny(out, fake_mnist))
    assert again["validation_accuracy"] == summary["validation_accuracy"]
    assert [r["step"] for r in _rows(out)] == [r["step"] for r in ref_rows]


def test_time_budget_stops_with_its_state_saved_and_the_same_command_continues(
        tmp_path, fake_mnist, reference_run):
    """--time-budget ends a run early (checkpointed, said so in the summary, no validation off
    its --eval-every schedule); run again, it ends with the meta-parameters of a run never
    stopped."""
    ref_dir, _ = reference_run
    out = tmp_path / "run"
    first = meta_train(tiny(out, fake_mnist, time_budget=1e-6))  # spent by the first step
    assert (first["outer_steps"], first["iterations"], first["stopped"]) == (1, 6, "time_budget")
    assert first["validation_accuracy"] is None and first["validation_step"] is None
    assert not any("val_acc" in r for r in _rows(out))
    assert load_gtn(out, "last")[3] == 1
    summary = meta_train(tiny(out, fake_mnist))
    assert (summary["outer_steps"], summary["stopped"]) == (6, None)
    _assert_same_meta(load_gtn(out, "last")[2], load_gtn(ref_dir, "last")[2])


class Warnings(Reporter):
    def __init__(self):
        super().__init__(quiet=True)
        self.warnings = []

    def warn(self, message):
        self.warnings.append(message)


def test_resuming_with_more_iterations_warns_of_the_new_schedule(tmp_path, fake_mnist,
                                                                 reference_run):
    out = tmp_path / "longer"
    shutil.copytree(reference_run[0], out)
    rep = Warnings()
    meta_train(tiny(out, fake_mnist, iterations=8), reporter=rep)
    assert any("--iterations 8 (was 6)" in w and "cosine" in w for w in rep.warnings)


def _corrupt_latest(run_dir, how):
    step_dir = max((p for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()),
                   key=lambda p: int(p.name))
    files = sorted((f for f in step_dir.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
    assert files, step_dir
    if how == "garbage":
        for f in files:
            f.write_bytes(b"garbage")
    else:  # truncate the largest file, the array data
        f = files[-1]
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return step_dir


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_corrupt_checkpoint_is_an_error_not_a_restart(tmp_path, fake_mnist, reference_run, how):
    ref_dir, _ = reference_run
    out = tmp_path / "copy"
    shutil.copytree(ref_dir, out)
    (out / "summary.json").unlink()
    step_dir = _corrupt_latest(out, how)
    with pytest.raises(CheckpointError) as e:
        meta_train(tiny(out, fake_mnist, iterations=9))
    msg = str(e.value)
    assert e.value.exit_code == 2 and str(step_dir) in msg and "unreadable" in msg
    assert "\n" not in msg
    assert not (out / "summary.json").exists()  # nothing ran
    assert (out / "checkpoints" / "3").is_dir() and step_dir.is_dir()  # nothing was deleted
    with pytest.raises(CheckpointError):
        load_gtn(out, "last")


def test_nonfinite_meta_gradients_stop_with_a_loadable_checkpoint(tmp_path, fake_mnist):
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteError) as e:
        meta_train(tiny(out, fake_mnist, init_lr=1e38, lr_max=0, max_nonfinite=2))
    msg = str(e.value)
    assert e.value.exit_code == 2 and "\n" not in msg
    # Non-finite from the first step: the starting point is at fault, not the meta-lr.
    assert "every outer step up to 2 was non-finite" in msg and "--init-lr (now 1e+38)" in msg
    assert "--meta-lr" not in msg
    rows = _rows(out)
    assert [r["finite"] for r in rows] == [False, False]
    _, _, meta, step = load_gtn(out, "last")
    assert step == 2
    for leaf in jax.tree_util.tree_leaves(meta):  # the skipped steps left the init untouched
        assert np.all(np.isfinite(np.asarray(leaf)))
    np.testing.assert_allclose(np.asarray(meta["log_lr"]), math.log(1e38), rtol=1e-6)
    assert not (out / "summary.json").exists()
    for folder in (out / "checkpoints").iterdir():  # every saved state, not just the newest
        state = Checkpointer(out / "checkpoints").restore(int(folder.name), _like(out))
        assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(state))
    # The run resumes from its saved state (the initial lr is still the fault, so it stops
    # again, after resuming from step 2).
    with pytest.raises(NonFiniteError):
        meta_train(tiny(out, fake_mnist, init_lr=1e38, lr_max=0, max_nonfinite=2,
                        meta_lr=0.001, iterations=12))
    assert [r["step"] for r in _rows(out) if "meta_loss" in r] == [1, 2, 3, 4]


def _like(run_dir):
    from gtn_nas.config import load_config
    from gtn_nas.meta.gtn import build_teacher
    from gtn_nas.meta.outer import init_meta_state

    cfg = load_config(MetaTrainConfig, run_dir / "config.json")
    return init_meta_state(cfg, build_teacher(cfg, (28, 28, 1), 10), jax.random.PRNGKey(0))


@pytest.mark.parametrize("overrides, field", [
    (dict(iterations=-1), "iterations"),
    (dict(iterations=0), "iterations"),
    (dict(curriculum="bogus"), "curriculum"),
    (dict(learner="resnet9000"), "learner"),
    (dict(remat="foo"), "remat"),
    (dict(meta_lr=-0.1), "meta_lr"),
    (dict(final_relative_lr=0.0), "final_relative_lr"),
    (dict(no_such_option=1), "no_such_option"),
])
def test_bad_config_values(tmp_path, overrides, field):
    with pytest.raises(ConfigError, match=field) as e:
        tiny(tmp_path / "bad", tmp_path, **overrides)
    assert e.value.exit_code == 2
    assert not (tmp_path / "bad").exists()
