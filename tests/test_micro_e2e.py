"""`gtn-nas meta-train --learner micro` then `gtn-nas evaluate`, as a user runs them.

A micro genotype is its own second-order program, and it was built inside the meta-step's trace
and cached, leaking that trace's constants (UnexpectedTracerError at the first validation);
evaluate then crashed stacking static genotypes. Run in a subprocess with XLA's default
optimisation: the test session's `--xla_backend_optimization_level=0` makes this program's
second-order convolutions ~40x slower to run (80 s a step against 2 s)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cli(*args, cwd):
    env = dict(os.environ, XLA_FLAGS="", GTN_NAS_NO_DOWNLOAD="1", GTN_NAS_XLA_CACHE="")
    return subprocess.run([sys.executable, "-c", "import cli; cli.main()", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=900)


def test_micro_meta_train_then_evaluate(tmp_path, fake_mnist):
    out = tmp_path / "micro"
    done = _cli("meta-train", "--preset", "tiny", "--learner", "micro", "--learner-width", "4",
                "--arch-pool", "1", "--iterations", "2", "--log-every", "1", "--eval-every", "2",
                "--out", str(out), "--data-dir", str(fake_mnist), "--quiet", cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["learner"].startswith("micro(") and summary["outer_steps"] == 2
    assert summary["nonfinite_steps"] == 0
    done = _cli("evaluate", "--gtn", str(out), "--data-dir", str(fake_mnist), "--num-seeds", "1",
                "--no-curve", "--real-lrs", "0.1", "--real-momentums", "0.5", "--json", cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["learner"].startswith("micro(")
    assert 0 <= result["gtn"]["test"]["mean"] <= 1 and 0 <= result["real"]["test"]["mean"] <= 1
