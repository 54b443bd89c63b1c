"""The `gtn-nas` command line for meta-train, evaluate and datasets: options reach the config,
user errors are one `error:` line with exit code 2, and one real run end to end.
(retrain, search and rank have their own test files.)"""

import dataclasses
import json

import pytest
from typer.testing import CliRunner

import cli
import gtn_nas.commands.evaluate
import gtn_nas.commands.meta_train
import gtn_nas.commands.search
from gtn_nas.config import EvaluateConfig, MetaTrainConfig, build_config

runner = CliRunner()


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("GTN_NAS_NO_DOWNLOAD", "1")
    monkeypatch.setenv("GTN_NAS_CACHE_DIR", str(tmp_path / "cache"))


pytestmark = pytest.mark.usefixtures("xla_disk_cache")


def _capture(monkeypatch, module, name, result):
    seen = []

    def fake(cfg, reporter=None):
        seen.append(cfg)
        return result

    monkeypatch.setattr(module, name, fake)
    return seen


def _error_line(result) -> str:
    """A failed command prints exactly one line, `error: ...`, and no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# ----------------------------------------------------------------------------- forwarding

def test_meta_train_forwards_options_over_preset(tmp_path, monkeypatch):
    seen = _capture(monkeypatch, gtn_nas.commands.meta_train, "meta_train", {"outer_steps": 1, "inner_lr": [0.1]})
    out = tmp_path / "run"
    result = runner.invoke(cli.app, [
        "meta-train", "--inner-steps", "7", "--meta-lr", "0.5", "--curriculum", "none",
        "--seed", "3", "--preset", "tiny", "--out", str(out), "--data-dir", "DATA",
        "--learn-labels", "--remat", "none", "--learner", "linear", "--generator-hidden", "24",
        "--init-lr", "0.3", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"outer_steps": 1, "inner_lr": [0.1]}
    (cfg,) = seen
    assert isinstance(cfg, MetaTrainConfig)
    assert (cfg.inner_steps, cfg.meta_lr, cfg.curriculum, cfg.seed, cfg.preset) == (7, 0.5, "none", 3, "tiny")
    assert (cfg.out, cfg.data_dir, cfg.learn_labels, cfg.remat, cfg.learner) == (
        str(out), "DATA", True, "none", "linear")
    assert (cfg.generator_hidden, cfg.init_lr) == (24, 0.3)
    tiny = dataclasses.asdict(build_config(MetaTrainConfig, "tiny", {}))
    for k in ("batch_size", "noise_dim", "iterations", "meta_batch_size", "learner_width",
              "generator", "log_every", "eval_every", "checkpoint_every"):
        assert getattr(cfg, k) == tiny[k], k  # the preset fills what was not given
    assert (cfg.dataset, cfg.meta_b1, cfg.max_nonfinite) == ("mnist", 0.9, 5)  # and the defaults the rest
    assert not out.exists()

    # Short aliases, another preset, and no options at all but the preset.
    result = runner.invoke(cli.app, ["meta-train", "-T", "5", "-B", "9", "--preset", "paper",
                                     "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    cfg = seen[-1]
    assert (cfg.inner_steps, cfg.batch_size, cfg.preset, cfg.learner, cfg.generator) == (
        5, 9, "paper", "base_fc", "conv")


def test_scaling_options_are_forwarded(tmp_path, monkeypatch):
    seen = _capture(monkeypatch, gtn_nas.commands.meta_train, "meta_train", {"outer_steps": 1})
    result = runner.invoke(cli.app, [
        "meta-train", "--preset", "tiny", "--out", str(tmp_path / "r"), "--devices", "0",
        "--coordinator", "host0:1234", "--num-processes", "2", "--process-id", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    cfg = seen[-1]
    assert (cfg.devices, cfg.coordinator, cfg.num_processes, cfg.process_id) == (
        0, "host0:1234", 2, 1)
    seen = _capture(monkeypatch, gtn_nas.commands.search, "search", {"architectures": 0})
    result = runner.invoke(cli.app, [
        "search", "--gtn", "G", "--out", str(tmp_path / "s"), "--workers", "3",
        "--num-shards", "4", "--shard", "2", "--real-batch-size", "32", "--real-schedule",
        "cosine", "--quiet"])
    assert result.exit_code == 0, result.output
    cfg = seen[-1]
    assert (cfg.workers, cfg.num_shards, cfg.shard) == (3, 4, 2)
    assert (cfg.real_batch_size, cfg.real_schedule) == (32, "cosine")
    result = runner.invoke(cli.app, ["search", "--gtn", "G", "--real-schedule", "step", "--quiet"])
    assert result.exit_code == 2 and "real schedule must be one of" in result.output


def test_evaluate_forwards_options(tmp_path, monkeypatch):
    seen = _capture(monkeypatch, gtn_nas.commands.evaluate, "evaluate", {"gtn": {"test": {"mean": 0.5}}})
    result = runner.invoke(cli.app, [
        "evaluate", "--gtn", str(tmp_path / "g"), "--num-seeds", "2", "--seed", "7", "--steps", "3",
        "--learner", "linear", "--data-dir", "D", "--out", str(tmp_path / "e.json"), "--no-curve",
        "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"gtn": {"test": {"mean": 0.5}}}
    (cfg,) = seen
    assert cfg == EvaluateConfig(gtn=str(tmp_path / "g"), data_dir="D", num_seeds=2, seed=7,
                                 steps=3, learner="linear", out=str(tmp_path / "e.json"), curve=False)
    result = runner.invoke(cli.app, ["evaluate", "--gtn", "G", "--quiet"])
    assert result.exit_code == 0, result.output
    assert seen[-1] == EvaluateConfig(gtn="G")  # defaults: 5 seeds, seed 1000, the GTN's T


def test_datasets_lists_what_is_there(fake_mnist):
    result = runner.invoke(cli.app, ["datasets", "--data-dir", str(fake_mnist), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["dataset"]: r for r in json.loads(result.stdout)}
    assert rows["mnist"]["status"] == "ok: 96 train + 32 test"
    assert rows["cifar10"]["status"] == "missing"


# ----------------------------------------------------------------------------- user errors

@pytest.mark.parametrize("args, message", [
    (["--data-dir", "/nonexistent"], "mnist not found"),
    (["--remat", "foo"], "remat must be one of"),
    (["--iterations", "-1"], "iterations must be > 0"),
    (["--curriculum", "sorted"], "curriculum must be one of"),
    (["--learner", "resnet"], "learner must be one of"),
    (["--generator-hidden", "0"], "generator_hidden must be > 0"),
    (["--learner-width", "-8"], "learner_width must be > 0"),
])
def test_meta_train_bad_input(tmp_path, fake_mnist, args, message):
    out = tmp_path / "run"
    base = ["meta-train", "--preset", "tiny", "--out", str(out), "--data-dir", str(fake_mnist)]
    line = _error_line(runner.invoke(cli.app, base + args))
    assert message in line
    if "/nonexistent" in args:
        assert "/nonexistent" in line and "train-images-idx3-ubyte.gz" in line
    assert not out.exists()  # refused before a run directory was made


def test_evaluate_bad_input(tmp_path):
    (tmp_path / "notarun").mkdir()
    line = _error_line(runner.invoke(cli.app, ["evaluate", "--gtn", str(tmp_path / "notarun")]))
    assert "not a meta-training run" in line and str(tmp_path / "notarun") in line
    line = _error_line(runner.invoke(cli.app, ["evaluate", "--gtn", str(tmp_path / "notarun"),
                                               "--num-seeds", "0"]))
    assert "num_seeds must be > 0" in line


# ----------------------------------------------------------------------------- end to end

def test_meta_train_then_evaluate(tmp_path, fake_mnist):
    run = tmp_path / "run"
    result = runner.invoke(cli.app, ["meta-train", "--preset", "tiny", "--data-dir", str(fake_mnist),
                                     "--out", str(run), "--quiet"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stdout == "" and result.stderr == ""
    assert json.loads((run / "summary.json").read_text())["outer_steps"] == 6

    result = runner.invoke(cli.app, ["evaluate", "--gtn", str(run), "--num-seeds", "2",
                                     "--data-dir", str(fake_mnist), "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads(result.stdout)
    assert summary == json.loads((run / "evaluate.json").read_text())
    best = json.loads((run / "summary.json").read_text())["best_step"]  # validated at 3 and 6
    assert (summary["num_seeds"], summary["inner_steps"], summary["gtn_outer_steps"]) == (2, 4, best)
    for side in ("gtn", "real"):
        for split in ("validation", "test"):
            stats = summary[side][split]
            assert 0.0 <= stats["min"] <= stats["mean"] <= stats["max"] <= 1.0, (side, split)
    assert len(summary["real_grid"]) == 15
    assert summary["gtn_minus_real_test"] == pytest.approx(
        summary["gtn"]["test"]["mean"] - summary["real"]["test"]["mean"])
    # the accuracy-vs-steps curve ends at the summary's figures, and its GTN point at n steps is
    # what `evaluate --steps n` reports with the same seeds
    curve = summary["curve"]
    assert curve["steps"] == [1, 2, 4]
    assert curve["gtn_test"][-1] == summary["gtn"]["test"]
    assert curve["real_test"][-1] == summary["real"]["test"]
    result = runner.invoke(cli.app, ["evaluate", "--gtn", str(run), "--num-seeds", "2", "--steps", "2",
                                     "--data-dir", str(fake_mnist), "--json",
                                     "--out", str(tmp_path / "ev2.json")])
    assert result.exit_code == 0, (result.output, result.exception)
    two = json.loads(result.stdout)
    assert two["curve"]["steps"] == [1, 2]
    assert two["gtn"]["test"]["mean"] == pytest.approx(curve["gtn_test"][1]["mean"], abs=1e-6)


def test_curve_steps_are_powers_of_two_then_the_length():
    from gtn_nas.commands.evaluate import curve_steps

    assert curve_steps(32) == [1, 2, 4, 8, 16, 32]
    assert curve_steps(5) == [1, 2, 4, 5]
    assert curve_steps(1) == [1]


@pytest.mark.parametrize("command", ["meta-train", "evaluate", "search", "rank", "retrain"])
def test_every_config_field_is_a_flag(command):
    """Options and config dataclasses cannot drift apart: each field a user may set has a flag
    (under its own name, or the one alias listed here), and each flag reaches a field."""
    import dataclasses

    from typer.main import get_command

    from gtn_nas.config import RankConfig, SearchConfig
    from gtn_nas.config import RetrainConfig

    cls = {"meta-train": MetaTrainConfig, "evaluate": EvaluateConfig, "search": SearchConfig,
           "rank": RankConfig, "retrain": RetrainConfig}[command]
    aliases = {"proxy": "proxies", "arch": "archs", "search_dir": "search"}
    not_fields = {"quiet", "json_", "eval_only"}  # output switches and retrain's reload mode
    flags = {p.name for p in get_command(cli.app).commands[command].params}
    fields = {f.name for f in dataclasses.fields(cls)}
    if command == "retrain":
        aliases.pop("arch")  # retrain's --arch is its `arch` field
    named = {aliases.get(f, f) for f in flags - not_fields}
    assert fields - named == set(), f"fields without a flag: {sorted(fields - named)}"
    assert named - fields == set(), f"flags without a field: {sorted(named - fields)}"


def test_help_lists_choices_and_preset_defaults():
    """Choices come from the config's Enums, defaults from the dataclass and the presets: one
    declaration, shown by --help."""
    result = runner.invoke(cli.app, ["meta-train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "[mnist|fashion_mnist|cifar10]" in text and "[auto|none|step|nested]" in text
    assert "tiny preset: 6, cpu preset: 1100, cpu-conv preset: 700, paper preset: 2000" in text
    result = runner.invoke(cli.app, ["search", "--help"], env={"COLUMNS": "200"})
    joined = " ".join(result.output.split())
    assert "[gtn|real|params|flops" in joined and "zico|vote]" in joined  # the choices may wrap
    assert "--vote" in joined


def test_cifar10_meta_training_settings_per_preset():
    """CIFAR-10 swaps in the paper's CIFAR learner under `paper` and `cpu-conv`; an explicit
    option still wins, and presets without CIFAR-10 settings keep their own."""
    paper = build_config(MetaTrainConfig, "paper", {"dataset": "cifar10"})
    assert (paper.learner, paper.inner_steps, paper.meta_batch_size) == ("base_larger2", 128, 256)
    conv = build_config(MetaTrainConfig, "cpu-conv", {"dataset": "cifar10"})
    assert (conv.learner, conv.learner_width, conv.iterations, conv.batch_size) == (
        "base_larger2", 8, 400, 64)
    assert build_config(MetaTrainConfig, "cpu-conv", {"dataset": "mnist"}).learner == "base_fc"
    mine = build_config(MetaTrainConfig, "cpu-conv", {"dataset": "cifar10", "learner_width": 4})
    assert (mine.learner, mine.learner_width) == ("base_larger2", 4)
    assert build_config(MetaTrainConfig, "cpu", {"dataset": "cifar10"}).learner == "mlp"


@pytest.mark.parametrize("cls", ["MetaTrainConfig", "SearchConfig", "RetrainConfig"])
def test_dataclass_defaults_are_the_default_preset(cls):
    import gtn_nas.config as config

    klass = getattr(config, cls)
    assert config.PRESET_VALUES[klass.COMMAND][config.DEFAULT_PRESET] == {}
    assert klass() == build_config(klass, config.DEFAULT_PRESET, {})
    for preset in config.PRESETS:  # every preset names only real fields, and builds
        assert set(config.PRESET_VALUES[klass.COMMAND][preset]) <= {
            f.name for f in dataclasses.fields(klass)}
        assert build_config(klass, preset, {}).preset == preset


def test_resumable_keys_are_declared_on_the_fields():
    from gtn_nas.config import SearchConfig, resumable_keys

    assert {"iterations", "meta_lr", "out", "data_dir"} <= resumable_keys(MetaTrainConfig)
    assert "inner_steps" not in resumable_keys(MetaTrainConfig)
    assert {"budget", "time_budget", "workers", "top_k"} <= resumable_keys(SearchConfig)
    assert "seed" not in resumable_keys(SearchConfig)


def test_remat_auto_keeps_residuals_where_they_fit():
    """`--remat auto` (the cpu preset's) resolves in the config, so config.json holds what ran:
    none for the MLP learners and the fixed conv learners up to base_fc's measured size (width
    16, B=128, T=32), step above it and for search spaces; an explicit level is kept."""
    from gtn_nas.config import resumable_keys

    def remat(preset="cpu", **values):
        return build_config(MetaTrainConfig, preset, values).remat

    assert remat() == "none" and remat(learner="linear") == "none"
    assert remat(learner="base_fc", learner_width=16) == "none"
    assert remat(learner="base_larger2", learner_width=8, batch_size=64) == "none"
    assert remat(learner="base_fc", learner_width=16, batch_size=256) == "step"
    assert remat(learner="base_fc", learner_width=16, inner_steps=64) == "step"
    for learner in ("base_fc", "base_larger2"):  # the default width (256) and the paper's
        assert remat(learner=learner) == "step" and remat(learner=learner, learner_width=None) == "step"
    assert remat(learner="nb201", learner_width=4) == "step"
    assert remat(learner="base_fc", learner_width=64, remat="none") == "none"
    assert remat("paper") == "step"
    assert remat("cpu-conv") == "step"  # the setting its teaching table was measured with
    assert "remat" in resumable_keys(MetaTrainConfig)  # memory and time, not the numbers
