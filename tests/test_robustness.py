"""Meta-training's guards, each provoked on purpose at tiny sizes: the bounded lr/momentum
schedule, rejection of a meta-gradient spike, rollback to the best state when validation
collapses, the best checkpoint that evaluate/search read, and refusal of non-finite input:
options, GTN parameters and a retrain whose loss diverges."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

import cli
from gtn_nas.commands.meta_train import meta_train
from gtn_nas.meta.gtn import build_learner_source, build_teacher, load_gtn
from gtn_nas.meta import exact_meta_step
from gtn_nas.meta.outer import SPIKE_GROWTH, SPIKE_WARMUP, init_meta_state
from gtn_nas.io.checkpoint import Checkpointer
from gtn_nas.config import EvaluateConfig, MetaTrainConfig, RankConfig, build_config
from gtn_nas.io.data import load_dataset
from gtn_nas.errors import ConfigError
from gtn_nas.commands.evaluate import evaluate
from gtn_nas.core.generator import make_generator
from gtn_nas.core.teacher import Teacher

pytestmark = pytest.mark.usefixtures("xla_disk_cache")
runner = CliRunner()


def tiny(out, data_dir, **kw):
    return build_config(MetaTrainConfig, "tiny",
                        dict(out=str(out), data_dir=str(data_dir), **kw))


# ----------------------------------------------------------------------------- bounded schedule

def test_bounded_schedule_starts_at_the_init_and_never_leaves_its_bounds():
    gen = make_generator("mlp", (28, 28, 1), 16)
    teacher = Teacher(gen, "full", 4, 8, 8, 10, init_lr=0.1, init_momentum=0.5, lr_max=0.6,
                      mom_max=0.9)
    meta = teacher.init(jax.random.PRNGKey(0))
    assert "log_lr" not in meta and "log_mom" not in meta
    lrs, moms = teacher.schedule(meta)
    np.testing.assert_allclose(lrs, 0.1, rtol=1e-5)
    np.testing.assert_allclose(moms, 0.5, rtol=1e-5)
    extreme = dict(meta, lr_logit=jnp.array([-1e4, -3.0, 3.0, 1e4]),
                   mom_logit=jnp.array([-1e4, 0.0, 5.0, 1e4]))
    lrs, moms = teacher.schedule(extreme)
    assert np.all((np.asarray(lrs) >= 0) & (np.asarray(lrs) <= 0.6))
    assert np.all((np.asarray(moms) >= 0) & (np.asarray(moms) <= 0.9))  # never above 1
    unbounded = Teacher(gen, "full", 4, 8, 8, 10, init_lr=0.1)
    assert "log_lr" in unbounded.init(jax.random.PRNGKey(0))  # the paper's parametrisation
    with pytest.raises(ConfigError, match="init_lr"):
        Teacher(gen, "full", 4, 8, 8, 10, init_lr=0.7, lr_max=0.6)


# ----------------------------------------------------------------------------- spike rejection

def test_a_meta_gradient_spike_is_rejected_and_the_run_goes_on(fake_mnist):
    """A large inner lr (e^5 times the learned one) puts the unroll past the edge of stability:
    its meta-gradient is finite but ~10^4 times the usual. The guard skips that step (the state
    is unchanged, Adam's moments too) and the next ordinary step is accepted again."""
    cfg = tiny("unused", fake_mnist, spike_factor=10.0, lr_max=0, momentum_max=0)
    data = load_dataset("mnist", str(fake_mnist), 0)
    teacher = build_teacher(cfg, data.image_shape, 10)
    source = build_learner_source(cfg, data.image_shape, 10)
    step = jax.jit(exact_meta_step(cfg, teacher, source, data.mean, data.std))
    images, labels = jnp.asarray(data.train.images), jnp.asarray(data.train.labels)
    state = init_meta_state(cfg, teacher, jax.random.PRNGKey(0))
    for i in range(SPIKE_WARMUP + 2):
        state, m = step(state, None, jax.random.PRNGKey(i), images, labels)
        assert not bool(m["spike"])
    ema = float(state.grad_ema)

    meta = dict(state.meta_params, log_lr=state.meta_params["log_lr"] + 5.0)
    wild = state._replace(meta_params=meta)
    after, m = step(wild, None, jax.random.PRNGKey(99), images, labels)
    assert bool(m["finite"]) and bool(m["spike"])
    assert float(m["grad_norm"]) > 100 * ema
    for a, b in zip(jax.tree_util.tree_leaves((after.meta_params, after.opt_state)),
                    jax.tree_util.tree_leaves((wild.meta_params, wild.opt_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(after.grad_ema) == pytest.approx(SPIKE_GROWTH * ema, rel=1e-5)

    off = exact_meta_step(tiny("unused", fake_mnist, spike_factor=0.0, lr_max=0,
                                 momentum_max=0), teacher, source, data.mean, data.std)
    applied, m = jax.jit(off)(wild, None, jax.random.PRNGKey(99), images, labels)
    assert not bool(m["spike"])  # without the guard the same step moves the generator
    moved = [not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(
        jax.tree_util.tree_leaves(applied.meta_params), jax.tree_util.tree_leaves(meta))]
    assert any(moved)

    _, m = step(state, None, jax.random.PRNGKey(100), images, labels)  # the run goes on
    assert not bool(m["spike"]) and bool(m["finite"])


# ----------------------------------------------------------------------------- rollback, best

@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    """Like fake_mnist (a bright square's position is the class) but 720 images, so 120 validation
    images make a validation reading worth comparing."""
    from conftest import write_squares

    return write_squares(tmp_path_factory.mktemp("squares"), train=720, test=64)


def collapse_cfg(out, data_dir, **kw):
    return tiny(out, data_dir, **{**dict(batch_size=32, meta_batch_size=128, init_lr=0.3,
                                         meta_lr=0.05, eval_every=2), **kw})


@pytest.fixture(scope="module")
def collapsed_run(tmp_path_factory, squares):
    """12 meta-steps (no rollback: a tiny GTN's validation swings widely), then 2 at a meta-lr of
    1000 with rollback on: Adam moves every meta-parameter by ~1000 and the fresh learner's
    validation collapses to chance at step 14 (both settings may change on resume)."""
    out = tmp_path_factory.mktemp("rollback") / "run"
    meta_train(collapse_cfg(out, squares, iterations=12))
    summary = meta_train(collapse_cfg(out, squares, iterations=14, meta_lr=1e3,
                                         rollback_drop=0.2))
    return out, summary


def _vals(run_dir):
    rows = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r["val_acc"] for r in rows if "val_acc" in r}


def _same(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_validation_collapse_rolls_back_to_the_best_state(collapsed_run, squares):
    out, summary = collapsed_run
    vals = _vals(out)
    best_step = max((s for s in vals if s <= 12), key=lambda s: (vals[s], -s))
    assert vals[best_step] > 0.4  # the GTN teaches something ...
    assert vals[14] < vals[best_step] - 0.2  # ... and the huge step really wrecked it
    assert summary["rollbacks"] == [{"step": 14, "to": best_step, "lr_scale": 0.5}]
    assert summary["best_step"] == best_step
    assert summary["best_validation_accuracy"] == vals[best_step]
    assert summary["validation_drops"][-1]["step"] == 14
    assert json.loads((out / "best" / "best.json").read_text())["step"] == best_step
    _, _, best, got_best = load_gtn(out)  # evaluate and search read `best` by default
    _, _, last, got_last = load_gtn(out, "last")
    assert (got_best, got_last) == (best_step, 14)
    _same(best, last)  # the state saved at step 14 is the best one, not the wrecked one


def test_a_resumed_run_rolls_back_from_the_best_checkpoint_on_disk(collapsed_run, squares,
                                                                    tmp_path):
    out = tmp_path / "again"
    shutil.copytree(collapsed_run[0], out)
    summary = meta_train(collapse_cfg(out, squares, iterations=16, meta_lr=1e3,
                                         rollback_drop=0.2))
    assert [r["step"] for r in summary["rollbacks"]] == [14, 16]
    assert summary["rollbacks"][1]["lr_scale"] == 0.25
    _same(load_gtn(out)[2], load_gtn(out, "last")[2])


def test_evaluate_uses_best_unless_told_last(collapsed_run, tmp_path, squares):
    out, summary = collapsed_run
    kw = dict(gtn=str(out), data_dir=str(squares), num_seeds=1, curve=False)
    best = evaluate(EvaluateConfig(out=str(tmp_path / "b.json"), **kw))
    last = evaluate(EvaluateConfig(out=str(tmp_path / "l.json"), checkpoint="last", **kw))
    assert (best["gtn_checkpoint"], best["gtn_outer_steps"]) == ("best", summary["best_step"])
    assert (last["gtn_checkpoint"], last["gtn_outer_steps"]) == ("last", 14)
    line = _error(runner.invoke(cli.app, ["evaluate", "--gtn", str(out), "--checkpoint", "first"]))
    assert "checkpoint must be one of best, last" in line


# ----------------------------------------------------------------------------- non-finite

def _error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("command, args, field", [
    ("meta-train", ["--meta-lr", "nan"], "meta_lr"),
    ("meta-train", ["--init-lr", "inf"], "init_lr"),
    ("meta-train", ["--grad-clip", "-inf"], "grad_clip"),
    ("meta-train", ["--lr-max", "nan"], "lr_max"),
    ("meta-train", ["--iterations", "100000000000000000000"], "iterations"),
    ("meta-train", ["--iterations", "20000000"], "iterations must be at most 10,000,000"),
    ("retrain", ["--arch", "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "--lr", "nan"],
     "lr must be a finite number"),
    ("search", ["--gtn", "G", "--real-lr", "inf", "--budget", "2"], "real_lr"),
    ("search", ["--gtn", "G", "--budget", "100000000000"], "budget"),
])
def test_non_finite_and_huge_options_are_refused_up_front(tmp_path, fake_mnist, command, args,
                                                           field):
    out = tmp_path / "out"
    line = _error(runner.invoke(cli.app, [command, *args, "--out", str(out), "--data-dir",
                                          str(fake_mnist), "--quiet"]))
    assert field in line
    assert not out.exists()  # nothing written


def test_non_finite_values_in_library_configs():
    with pytest.raises(ConfigError, match="real_lrs must be a finite number"):
        EvaluateConfig(real_lrs=(0.1, float("nan")))
    with pytest.raises(ConfigError, match="top_fraction must be a finite number"):
        RankConfig(top_fraction=float("nan"))


def test_evaluate_and_search_refuse_non_finite_gtn_parameters(collapsed_run, tmp_path, squares):
    out = tmp_path / "poisoned"
    shutil.copytree(collapsed_run[0], out)
    shutil.rmtree(out / "best")  # no best: both read the last checkpoint, now poisoned
    ckpt = Checkpointer(out / "checkpoints")
    cfg = collapse_cfg(out, squares)
    teacher = build_teacher(cfg, (28, 28, 1), 10)
    state = ckpt.restore(14, init_meta_state(cfg, teacher, jax.random.PRNGKey(0)))
    gen = jax.tree_util.tree_map(lambda x: np.full_like(x, np.nan), state.meta_params["generator"])
    ckpt.save(15, state._replace(meta_params=dict(state.meta_params, generator=gen)))
    ckpt.close()
    line = _error(runner.invoke(cli.app, ["evaluate", "--gtn", str(out), "--data-dir",
                                          str(squares), "--quiet"]))
    assert "non-finite" in line and str(out / "checkpoints" / "15") in line
    line = _error(runner.invoke(cli.app, ["search", "--gtn", str(out), "--data-dir",
                                          str(squares), "--preset", "tiny", "--out",
                                          str(tmp_path / "s"), "--quiet"]))
    assert "non-finite" in line


def test_a_diverging_retrain_stops_and_exports_nothing(tmp_path, fake_mnist):
    out = tmp_path / "diverge"
    line = _error(runner.invoke(cli.app, [
        "retrain", "--preset", "tiny", "--arch",
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|none~1|avg_pool_3x3~2|",
        "--channels", "2", "--lr", "1e30", "--grad-clip", "0", "--out", str(out), "--data-dir",
        str(fake_mnist), "--quiet"]))
    assert "non-finite" in line and "no model exported" in line
    assert not (out / "model.msgpack").exists() and not (out / "summary.json").exists()
