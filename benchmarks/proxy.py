"""Proxy-quality benchmark: how well cheap scores rank architectures by their long-training accuracy.

    python benchmarks/proxy.py --gtn runs/bench-teach/cpu-full --archs 50 --out runs/bench-proxy

The same ``--archs`` architectures (search seed ``--seed``) are scored by three `gtn-nas search`
runs under --out, each resumable and extended chunk by chunk (so a stopped run keeps complete
rows and the same command continues it):

- ``proxy/``: the GTN proxy (T steps on the GTN's curriculum), real data at the same T steps,
  the parameter count;
- ``real-long/``: real data at ``--long-factor`` x T steps (the paper's comparison: 9x);
- ``truth/``: the ground truth, real data for ``--truth-steps`` steps with a cosine-decayed lr.

Then Spearman and Kendall correlation with the truth (and top-half/top-10% figures, as
`gtn-nas rank`) for every proxy, a scatter plot per proxy, a JSON result and a RESULTS.md row.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gtn_nas.io.hostmem import reuse_freed_memory  # noqa: E402

from benchmarks.common import describe, finish, machine  # noqa: E402
from gtn_nas import enable_compilation_cache  # noqa: E402
from gtn_nas.io.runs import read_json  # noqa: E402


def stages(args, steps: int) -> dict[str, dict]:
    """Search overrides of each stage (all share the space, sizes, seed and validation subset)."""
    common = dict(gtn=args.gtn, space=args.space, seed=args.seed, channels=args.channels,
                  cells=args.cells, eval_subset=args.eval_subset, data_dir=args.data_dir,
                  real_lr=args.real_lr, real_momentum=args.real_momentum, program=args.program)
    out = Path(args.out)
    return {
        "proxy": dict(common, out=str(out / "proxy"), proxies=("gtn", "real", "params"),
                      real_steps=steps),
        "real-long": dict(common, out=str(out / "real-long"), proxies=("real",),
                          real_steps=args.long_factor * steps),
        "truth": dict(common, out=str(out / "truth"), proxies=("real",),
                      real_steps=args.truth_steps, real_lr=args.truth_lr,
                      real_schedule="cosine"),
    }


def run_stages(args, plan: dict[str, dict], deadline: float) -> dict[str, float]:
    """Extends every stage chunk by chunk up to ``--archs``; returns each stage's wall seconds."""
    from gtn_nas.commands import search as lib
    from gtn_nas.config import SearchConfig, build_config
    from gtn_nas.io.ui import Reporter

    rep = Reporter(quiet=args.quiet)
    walls = {name: 0.0 for name in plan}
    for budget in range(args.chunk, args.archs + args.chunk, args.chunk):
        budget = min(budget, args.archs)
        for name, over in plan.items():
            left = deadline - time.time()
            if left <= 0:
                print(f"time budget reached while extending {name} to {budget} architectures; "
                      "re-run the same command to continue")
                return walls
            t0 = time.time()
            limit = None if left == float("inf") else left
            lib.search(build_config(SearchConfig, "cpu", dict(over, budget=budget, time_budget=limit)), rep)
            walls[name] += time.time() - t0
    return walls


def table(plan: dict[str, dict]) -> dict[str, dict]:
    """idx -> row of each stage's store."""
    from gtn_nas.search.store import Store

    out = {}
    for name, over in plan.items():
        path = Path(over["out"]) / "results.sqlite"
        if not path.exists():
            out[name] = {}
            continue
        store = Store(path)
        try:
            out[name] = {r["idx"]: r for r in store.rows()}
        finally:
            store.close()
    return out


def correlations(rows: dict[str, dict]) -> tuple[dict[str, dict], dict[str, list]]:
    """Rank metrics of every proxy against the truth, over the architectures all stages scored."""
    import numpy as np

    from gtn_nas.commands.rank import rank_metrics

    common = sorted(set.intersection(*(set(r) for r in rows.values())))
    common = [i for i in common if rows["truth"][i].get("real_score") is not None
              and rows["real-long"][i].get("real_score") is not None
              and rows["proxy"][i].get("gtn_score") is not None]
    for i in common:  # same seed, same index: the same architecture everywhere
        genos = {rows[s][i]["genotype"] for s in rows}
        if len(genos) != 1:
            raise SystemExit(f"architecture {i} differs between stages: {sorted(genos)}")
    truth = np.array([rows["truth"][i]["real_score"] for i in common])
    series = {
        "gtn": [rows["proxy"][i]["gtn_score"] for i in common],
        "real": [rows["proxy"][i]["real_score"] for i in common],
        "real-long": [rows["real-long"][i]["real_score"] for i in common],
        "params": [float(rows["proxy"][i]["params"]) for i in common],
    }
    idx = np.array(common)
    metrics = {k: rank_metrics(np.array(v), truth, idx) for k, v in series.items()}
    series["truth"] = truth.tolist()
    series["idx"] = common
    return metrics, series


def plot(series: dict[str, list], metrics: dict[str, dict], labels: dict[str, str], out: Path) -> list[str]:
    from gtn_nas.io import plots

    paths = []
    for k in ("gtn", "real", "real-long", "params"):
        p = out / f"proxy-{k}.png"
        rho = metrics[k]["spearman"]
        plots.scatter(series[k], [100 * t for t in series["truth"]], p, labels[k],
                      "truth: val % after long training",
                      f"{labels[k]} vs truth, n={metrics[k]['n']}, "
                      f"Spearman {rho if rho is None else round(rho, 3)}")
        paths.append(str(p))
    return paths


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def main() -> None:
    reuse_freed_memory()  # before JAX starts its threads (gtn_nas/io/hostmem.py)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gtn", required=True, help="`gtn-nas meta-train` run directory")
    ap.add_argument("--space", default="nb201")
    ap.add_argument("--archs", type=int, default=50, help="architectures (search indices 0..N-1)")
    ap.add_argument("--seed", type=int, default=0, help="search seed")
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--cells", type=int, default=1)
    ap.add_argument("--eval-subset", type=int, default=2000, help="validation images scored on")
    ap.add_argument("--steps", type=int, default=None, help="proxy steps T (default: the GTN's)")
    ap.add_argument("--long-factor", type=int, default=9, help="real-long proxy: this x T steps")
    ap.add_argument("--real-lr", type=float, default=0.1)
    ap.add_argument("--real-momentum", type=float, default=0.9)
    ap.add_argument("--truth-steps", type=int, default=576, help="ground truth: real SGD steps")
    ap.add_argument("--truth-lr", type=float, default=0.1, help="ground truth: initial lr (cosine to 0)")
    ap.add_argument("--program", default="auto")
    ap.add_argument("--chunk", type=int, default=10, help="architectures added per round")
    ap.add_argument("--time-budget", type=float, default=None, help="seconds for this invocation")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="runs/bench-proxy")
    ap.add_argument("--analyze-only", action="store_true",
                    help="score nothing new: correlate what the stages already hold")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    enable_compilation_cache()
    m = machine()
    print("machine:", describe(m))
    steps = args.steps or read_json(Path(args.gtn) / "config.json")["inner_steps"]
    plan = stages(args, steps)
    plan["proxy"]["steps"] = steps
    deadline = time.time() + (args.time_budget if args.time_budget else float("inf"))
    walls = {} if args.analyze_only else run_stages(args, plan, deadline)
    rows = table(plan)
    metrics, series = correlations(rows)
    n = len(series["idx"])
    if n < 2:
        raise SystemExit(f"only {n} architecture(s) scored by every stage; nothing to correlate")
    labels = {"gtn": f"GTN proxy, {steps} steps", "real": f"real data, {steps} steps",
              "real-long": f"real data, {args.long_factor * steps} steps", "params": "parameter count"}
    out = Path(args.out)
    figures = plot(series, metrics, labels, out)
    per_arch = {}
    for name, col in (("proxy", ("gtn", "real")), ("real-long", ("real",)), ("truth", ("real",))):
        for c in col:
            tr = [rows[name][i].get(f"{c}_train_s") or 0.0 for i in series["idx"]]
            co = [rows[name][i].get(f"{c}_compile_s") or 0.0 for i in series["idx"]]
            per_arch[f"{name}:{c}"] = {"train_s_mean": sum(tr) / n, "compile_s_mean": sum(co) / n}
    result = {"machine": m, "args": vars(args), "steps": steps, "n": n, "metrics": metrics,
              "series": series, "stage_wall_s_this_run": walls, "per_arch_s": per_arch,
              "figures": figures}
    truth = series["truth"]
    lines = [f"Machine: {describe(m)}. {n} of {args.archs} architectures scored by every stage "
             f"({args.space}, C={args.channels}, N={args.cells}, search seed {args.seed}, "
             f"{args.eval_subset} validation images). Ground truth: {args.truth_steps} real SGD "
             f"steps, lr {args.truth_lr} cosine to 0, momentum {args.real_momentum} "
             f"(truth range {100 * min(truth):.1f}-{100 * max(truth):.1f}%). Real proxies: lr "
             f"{args.real_lr}, momentum {args.real_momentum}, constant. Batch = the GTN's.", "",
             "| proxy | Spearman | Kendall | Spearman top 50% | top-10% overlap | truth of its pick (best) | s / arch (train + compile) |",
             "|---|---|---|---|---|---|---|"]
    cost = {"gtn": "proxy:gtn", "real": "proxy:real", "real-long": "real-long:real"}
    for k in ("gtn", "real", "real-long", "params"):
        r = metrics[k]
        c = per_arch.get(cost.get(k, ""))
        secs = f"{c['train_s_mean']:.1f} + {c['compile_s_mean']:.1f}" if c else "0"
        lines.append(f"| {labels[k]} | {_f(r['spearman'])} | {_f(r['kendall'])} | "
                     f"{_f(r['spearman_top'])} | {_f(r['top10_overlap'])} | "
                     f"{100 * r['picked_truth']:.1f}% ({100 * r['best_truth']:.1f}%) | {secs} |")
    t = per_arch["truth:real"]
    lines += ["", f"Ground truth cost: {t['train_s_mean']:.1f} s train + {t['compile_s_mean']:.1f} s "
              f"compile per architecture. Figures: {', '.join(figures)}."]
    finish(result, lines, out / "proxy.json", "Proxy quality (benchmarks/proxy.py)", not args.no_record)


if __name__ == "__main__":
    main()
