"""`gtn-nas show DIR`: the pictures of a run directory, drawn from what the run saved.

- a meta-training run: meta-loss and fresh-learner validation accuracy against outer steps
  (``plots/meta_training.png``, ``plots/validation.png``), and GTN vs tuned real data when
  ``evaluate.json`` exists (``plots/evaluate.png``);
- a search: each of its proxies against every other one (and the parameter count), with
  Spearman's rho in the title (``plots/<x>_vs_<y>.png``);
- a retrain: the learning curve (``plots/learning_curve.png``).

Nothing is recomputed: the PNGs come from metrics.jsonl, evaluate.json or results.sqlite.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from gtn_nas.io import plots
from gtn_nas.errors import CheckpointError, GtnError
from gtn_nas.io.runs import check_writable, read_json, read_jsonl


_STATS = {"mean": float, "std": float}
EVALUATE_SCHEMA = {"gtn": {"test": _STATS}, "real": {"lr": float, "momentum": float, "test": _STATS},
                   "inner_steps": int, "num_seeds": int,
                   "curve": {"steps": [int], "gtn_test": [{"mean": float}],
                             "real_test": [{"mean": float}]}}


def kind_of(run_dir: Path) -> str:
    if (run_dir / "results.sqlite").exists():
        return "search"
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        try:  # the config says it best; the metrics rows (any readable one) otherwise
            config = read_json(run_dir / "config.json")
            if isinstance(config, dict) and ("inner_steps" in config or "epochs" in config):
                return "meta-train" if "inner_steps" in config else "retrain"
        except GtnError:
            pass
        rows = read_jsonl(metrics)
        return "meta-train" if any("meta_loss" in r for r in rows) else "retrain"
    raise CheckpointError(f"{run_dir} is not a gtn-nas run directory (no metrics.jsonl or "
                          "results.sqlite); give the --out of meta-train, search or retrain")


def _meta_train(run_dir: Path, out: Path) -> list[Path]:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    train = [r for r in rows if "meta_loss" in r and r.get("finite", True)]
    val = [r for r in rows if "val_acc" in r]
    written = []
    if train:
        path = out / "meta_training.png"
        plots.curves({"meta-loss": ([r["step"] for r in train], [r["meta_loss"] for r in train])},
                     path, "outer step", "meta-loss (real data)", f"meta-training: {run_dir.name}")
        written.append(path)
    if val:
        path = out / "validation.png"
        plots.curves({"fresh learner": ([r["step"] for r in val],
                                        [100 * r["val_acc"] for r in val])},
                     path, "outer step", "validation accuracy %", "learner trained on the GTN")
        written.append(path)
    ev = run_dir / "evaluate.json"
    if ev.exists():
        e = read_json(ev, EVALUATE_SCHEMA)
        c = e["curve"]
        if not len(c["steps"]) == len(c["gtn_test"]) == len(c["real_test"]):
            raise CheckpointError(f"{ev} is damaged: its curve's lists differ in length")
        path = out / "evaluate.png"
        plots.bars({"GTN": e["gtn"]["test"], f"real (lr {e['real']['lr']}, mom "
                    f"{e['real']['momentum']})": e["real"]["test"]}, path,
                   f"test accuracy after {e['inner_steps']} inner steps ({e['num_seeds']} seeds)")
        written.append(path)
        if len(c["steps"]) > 1:  # `evaluate --no-curve`: the last point only
            path = out / "accuracy_vs_steps.png"
            plots.curves({"GTN": (c["steps"], [100 * r["mean"] for r in c["gtn_test"]]),
                          f"real (lr {e['real']['lr']}, mom {e['real']['momentum']})":
                          (c["steps"], [100 * r["mean"] for r in c["real_test"]])},
                         path, "inner steps", "test accuracy %",
                         f"fresh learners, mean of {e['num_seeds']} seeds", logx=True)
            written.append(path)
    return written


def _search(run_dir: Path, out: Path) -> list[Path]:
    from gtn_nas.commands.rank import _corr
    from gtn_nas.search.store import DEGENERATE, PROXIES, Store, score_column

    from gtn_nas.config import VOTE
    from gtn_nas.search.vote import with_vote

    with Store(run_dir / "results.sqlite", readonly=True) as store:
        rows = store.rows()
        vote = store.get_meta(VOTE)
    if vote:
        rows = with_vote(rows, vote)
    config = run_dir / "config.json"
    chosen = (set(read_json(config, {"proxies": [str]})["proxies"]) if config.is_file()
              else set(PROXIES))
    cols = [score_column(p) for p in PROXIES if (p in chosen or p == "params")
            and sum(r.get(score_column(p)) is not None for r in rows) >= 2]
    written = []
    for x, y in itertools.combinations(cols, 2):
        pairs = [(r[x], r[y]) for r in rows if r.get(x) is not None and r.get(y) is not None
                 and DEGENERATE not in (r[x], r[y])]  # undefined zero-cost scores: not drawn
        if len(pairs) < 2:
            continue
        a, b = (np.asarray(v, float) for v in zip(*pairs))
        rho, tau = _corr(a, b)
        shown = "n/a" if rho is None else f"{rho:.3f}"
        path = out / f"{x}_vs_{y}.png"
        plots.scatter(a, b, path, x, y, f"{run_dir.name}: {len(a)} architectures, Spearman {shown}")
        written.append(path)
    return written


def _retrain(run_dir: Path, out: Path) -> list[Path]:
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "val_acc" in r and "epoch" in r]
    if not rows:
        return []
    path = out / "learning_curve.png"
    plots.curves({"validation": ([r["epoch"] for r in rows], [100 * r["val_acc"] for r in rows])},
                 path, "epoch", "accuracy %", f"retrain: {run_dir.name}")
    return [path]


def show(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is a file, not a run directory; give the --out "
                              "directory of meta-train, search or retrain")
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} does not exist; give the --out directory of a run")
    kind = kind_of(run_dir)
    out = check_writable(run_dir / "plots")
    written = {"meta-train": _meta_train, "search": _search, "retrain": _retrain}[kind](run_dir, out)
    return {"run_dir": str(run_dir), "kind": kind, "plots": [str(p) for p in written]}
