"""`gtn-nas show`: PNGs drawn from what a run saved, for each kind of run directory."""

import json

from typer.testing import CliRunner

import cli
from gtn_nas.commands.show import kind_of, show
from gtn_nas.search.store import Store

runner = CliRunner()


def _lines(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_show_draws_each_kind_of_run(tmp_path):
    meta = tmp_path / "gtn"
    meta.mkdir()
    _lines(meta / "metrics.jsonl", [{"step": s, "meta_loss": 3.0 / s, "finite": True}
                                    for s in (1, 2, 3)] + [{"step": 3, "val_acc": 0.5}])
    (meta / "metrics.jsonl").write_text((meta / "metrics.jsonl").read_text() + '{"step": 4, "me')
    (meta / "evaluate.json").write_text(json.dumps({
        "gtn": {"test": {"mean": 0.9, "std": 0.01}}, "inner_steps": 32, "num_seeds": 5,
        "real": {"lr": 0.3, "momentum": 0.5, "test": {"mean": 0.88, "std": 0.02}},
        "curve": {"steps": [1, 2], "gtn_test": [{"mean": 0.5}, {"mean": 0.9}],
                  "real_test": [{"mean": 0.4}, {"mean": 0.88}]}}))
    search = tmp_path / "search"
    search.mkdir()
    with Store(search / "results.sqlite") as store:
        for i, (g, r) in enumerate([(0.1, 0.5), (0.2, 0.7), (0.3, 0.6)]):
            store.put({"idx": i, "genotype": f"g{i}", "space": "nb201", "params": 100 * (i + 1),
                       "gtn_score": g, "real_score": r})
    retrain = tmp_path / "retrain"
    retrain.mkdir()
    _lines(retrain / "metrics.jsonl", [{"kind": "epoch", "step": 10 * e, "epoch": e,
                                        "val_acc": 0.9 + e / 100} for e in (1, 2)])
    expected = {meta: ["meta_training.png", "validation.png", "evaluate.png", "accuracy_vs_steps.png"],
                search: ["gtn_score_vs_real_score.png", "gtn_score_vs_params.png",
                         "real_score_vs_params.png"],
                retrain: ["learning_curve.png"]}
    for folder, names in expected.items():
        result = show(folder)
        assert [p.split("/")[-1] for p in result["plots"]] == names
        for name in names:
            assert (folder / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    assert [kind_of(f) for f in expected] == ["meta-train", "search", "retrain"]


def test_show_of_a_folder_that_is_not_a_run(tmp_path):
    res = runner.invoke(cli.app, ["show", str(tmp_path)])
    assert res.exit_code == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: ") and "not a gtn-nas run directory" in res.stderr
    res = runner.invoke(cli.app, ["show", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "does not exist" in res.stderr


def test_a_damaged_metrics_line_is_one_error_unless_the_config_says_the_kind(tmp_path):
    run = tmp_path / "gtn"
    run.mkdir()
    rows = "".join(json.dumps({"step": s, "meta_loss": 1.0, "finite": True}) + "\n"
                   for s in (1, 2))
    (run / "metrics.jsonl").write_text('{"step": 0, "pad": "' + "x" * 5000 + "\n" + rows)  # cut
    res = runner.invoke(cli.app, ["show", str(run)])  # only the last line may be cut by a kill
    assert res.exit_code == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: ") and "line 1 is damaged" in res.stderr
    (run / "config.json").write_text(json.dumps({"inner_steps": 32}))
    assert kind_of(run) == "meta-train"
    (run / "config.json").write_text(json.dumps({"epochs": 3}))
    assert kind_of(run) == "retrain"  # the config decides
