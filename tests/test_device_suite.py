"""benchmarks/device_suite.py: the GPU suite's every stage at --smoke sizes on CPU, its budget
split, its child processes (time limit, no tensorflow-datasets) and its resume."""

import argparse
import json
import subprocess
import sys
import time

import pytest

from benchmarks.common import RESULTS_MD
from benchmarks.device_suite import STAGES, Suite, allocate
from conftest import REPO_ROOT


def test_each_stage_gets_its_share_of_what_is_left():
    assert allocate(100.0, list(STAGES)) == pytest.approx(35.0)
    assert allocate(100.0, ["proxy", "scaling"]) == pytest.approx(100 * 2 / 3)
    assert allocate(100.0, ["scaling"]) == pytest.approx(100.0)
    assert allocate(-5.0, ["scaling"]) == 0.0


def _suite(tmp_path, budget=60.0):
    return Suite(argparse.Namespace(out=str(tmp_path / "s"), smoke=True, budget=budget))


def test_children_cannot_import_tfds_and_are_stopped_at_their_limit(tmp_path):
    suite = _suite(tmp_path)
    blocked = subprocess.run([sys.executable, "-c", "import tensorflow_datasets"],
                             env=suite.env, capture_output=True, text=True)
    assert blocked.returncode != 0 and "not used on this path" in blocked.stderr
    t0 = time.time()
    child = suite.run("x", [sys.executable, "-c", "import time; time.sleep(60)"], timeout=1.0)
    assert child["timed_out"] and child["rc"] != 0 and time.time() - t0 < 20


def test_a_spent_budget_starts_no_stage_and_keeps_the_record(tmp_path, shared_data):
    out = tmp_path / "suite"
    done = _run("--smoke", "--data-dir", str(shared_data), "--out", str(out), "--budget", "1",
                timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "no time left in the budget" in done.stdout
    state = json.loads((out / "suite.json").read_text())
    assert state["stages"]["teach"]["status"] == "pending" and len(state["calls"]) == 1
    assert not (out / "teach").exists()


def test_a_corrupt_suite_json_is_one_line_not_a_traceback(tmp_path):
    out = tmp_path / "suite"
    out.mkdir()
    (out / "suite.json").write_text('{"stages": {"teach": ')  # cut short mid-write by hand
    done = _run("--smoke", "--out", str(out), "--budget", "1", timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"unreadable {out / 'suite.json'} (a suite's "
                                                 "record, not JSON of one); use another --out "
                                                 "or remove it"]
    assert (out / "suite.json").read_text() == '{"stages": {"teach": '  # kept as it was


def _run(*args, timeout=1500):
    return subprocess.run([sys.executable, "benchmarks/device_suite.py", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_smoke_suite_runs_every_stage_and_a_second_call_skips_them(tmp_path, shared_data):
    out = tmp_path / "suite"
    first = _run("--smoke", "--data-dir", str(shared_data), "--out", str(out))
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    state = json.loads((out / "suite.json").read_text())
    st = state["stages"]
    assert {s: st[s]["status"] for s in STAGES} == {s: "done" for s in STAGES}, st
    t = st["teach"]
    assert (t["outer_steps"], t["iterations"], t["config"]["generator"]) == (3, 3, "conv")
    assert 0 <= t["gtn_test"]["mean"] <= 1 and 0 <= t["real_test"]["mean"] <= 1
    assert t["curve"]["steps"] == [1, 2]  # the second evaluate, after the headline's
    cv = st["conv"]  # the cpu-conv preset (its learner), no inner-step curve, its validations
    assert (cv["outer_steps"], cv["config"]["learner"], cv["curve"]) == (3, "base_fc", None)
    assert 0 <= cv["gtn_test"]["mean"] <= 1 and cv["val_curve"][-1][0] == 3
    tiny = st["speed"]["presets"]["tiny"]
    assert tiny["steps_per_s"] > 0 and tiny["flops_per_step"] > 0 and tiny["peak_memory_mb"] > 0
    assert st["speed"]["search"]["archs_per_min"] > 0
    px = st["proxy"]
    assert px["n"] == px["archs"] == 2
    assert set(px["metrics"]) >= {"gtn", "real", "real-long", "params", "flops", "naswot",
                                  "synflow", "jacov", "snip", "grad_norm"}
    assert all(-1 <= m["spearman"] <= 1 for m in px["metrics"].values() if m["spearman"] is not None)
    assert [r["devices"] for r in st["scaling"]["rows"]] == [1, 2]
    md = (out / "suite.md").read_text()
    for heading in ("1. `paper` preset, MNIST", "2. `cpu-conv` preset", "3. Speed", "4. Proxies",
                    "5. Sharded"):
        assert heading in md

    walls = {s: st[s]["wall_s"] for s in STAGES}
    again = _run("--smoke", "--data-dir", str(shared_data), "--out", str(out), "--budget", "120",
                 timeout=300)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert again.stdout.count("done in an earlier call; skipped") == len(STAGES)
    state = json.loads((out / "suite.json").read_text())
    assert len(state["calls"]) == 2 and state["calls"][1]["ran"] == []
    assert {s: state["stages"][s]["wall_s"] for s in STAGES} == walls

    before = RESULTS_MD.read_text()
    record = _run("--report", str(out), "--record", timeout=60)
    assert record.returncode != 0 and "not recorded" in record.stderr
    assert RESULTS_MD.read_text() == before
