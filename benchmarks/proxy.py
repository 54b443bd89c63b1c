"""Proxy-quality benchmark: how well cheap scores rank architectures by their long-training accuracy.

    python benchmarks/proxy.py --gtn runs/bench-teach/cpu-full --archs 50 --out runs/bench-proxy
    python benchmarks/proxy.py --truth nb201 --dataset cifar10 --steps 32 --zero-cost \
        --channels 16 --cells 5 --archs 100 --curve 4,8,16 --out runs/bench-proxy-nb201

The same ``--archs`` architectures (search seed ``--seed``) are scored by resumable `gtn-nas
search` runs under --out, each extended chunk by chunk (so a stopped run keeps complete rows and
the same command continues it):

- ``proxy/``: the GTN proxy (T steps on the GTN's curriculum; without ``--gtn`` none), real
  data at the same T steps, params and flops, and with ``--zero-cost`` every zero-cost proxy;
- ``real-long/``: real data at ``--long-factor`` x T steps (the paper's comparison: 9x);
- ``real@S/``, ``gtn@S/``: real data and the GTN at each shorter length S of ``--curve`` (the
  paper's figure: rank correlation against the number of proxy steps);
- ``gtn-bnreal/`` (``--gtn-bn-real``): the GTN proxy evaluated with batch-norm statistics of one
  real batch (`gtn-nas search --gtn-bn real`), beside the plain one;
- ``truth/`` (``--truth long``): the ground truth, real data for ``--truth-steps`` steps with a
  cosine-decayed lr; ``--truth nb201`` reads NAS-Bench-201's CIFAR-10 table instead.

Then Spearman and Kendall correlation with the truth, top-half/top-10% figures and best-of-N (as
`gtn-nas rank`) for every proxy, a scatter plot per proxy, the rho-vs-steps plot, a JSON result
and a RESULTS.md row.
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
from gtn_nas.config import ZERO_COST_PROXIES  # noqa: E402
from gtn_nas.io.runs import read_json  # noqa: E402


def stages(args, steps: int) -> dict[str, dict]:
    """Search overrides of each stage (all share the space, sizes, seed and validation subset)."""
    common = dict(space=args.space, seed=args.seed, channels=args.channels,
                  cells=args.cells, eval_subset=args.eval_subset, data_dir=args.data_dir,
                  real_lr=args.real_lr, real_momentum=args.real_momentum, program=args.program,
                  zc_batch_size=args.zc_batch_size)
    if args.gtn:
        common["gtn"] = args.gtn
    if args.dataset:
        common["dataset"] = args.dataset
    out = Path(args.out)
    first = (("gtn",) if args.gtn else ()) + ("real", "params", "flops")
    if args.zero_cost:
        first += ZERO_COST_PROXIES
    plan = {
        "proxy": dict(common, out=str(out / "proxy"), proxies=first, steps=steps,
                      real_steps=steps),
        "real-long": dict(common, out=str(out / "real-long"), proxies=("real",),
                          real_steps=args.long_factor * steps),
    }
    for s in args.curve:
        plan[f"real@{s}"] = dict(common, out=str(out / f"real@{s}"), proxies=("real",),
                                 real_steps=s)
        if args.gtn and s < steps:
            plan[f"gtn@{s}"] = dict(common, out=str(out / f"gtn@{s}"), proxies=("gtn",), steps=s)
    if args.gtn and args.gtn_bn_real:
        plan["gtn-bnreal"] = dict(common, out=str(out / "gtn-bnreal"), proxies=("gtn",),
                                  steps=steps, gtn_bn="real")
    if args.truth == "long":
        plan["truth"] = dict(common, out=str(out / "truth"), proxies=("real",),
                             real_steps=args.truth_steps, real_lr=args.truth_lr,
                             real_schedule="cosine")
    return plan


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


def series_of(plan: dict[str, dict], rows: dict[str, dict], common: list[int]) -> dict[str, list]:
    """Proxy name -> its scores over ``common``: the proxy stage's every proxy under its own name,
    real-long, and each curve stage under its stage name."""
    from gtn_nas.search.store import score_column

    out = {p: [float(rows["proxy"][i][score_column(p)]) for i in common]
           for p in plan["proxy"]["proxies"]}
    out["real-long"] = [rows["real-long"][i]["real_score"] for i in common]
    for name, over in plan.items():
        if "@" in name or name == "gtn-bnreal":
            out[name] = [rows[name][i][score_column(over["proxies"][0])] for i in common]
    return out


COMBINED = (("gtn", "naswot"), ("gtn", "synflow"), ("gtn-bnreal", "naswot"),
            ("gtn-bnreal", "synflow"))


def combined(series: dict[str, list]) -> dict[str, list]:
    """Rank averages of a trained proxy and a zero-cost one ("gtn+naswot"): the issue's
    combined proxy, scored beside its parts (ties share the mean rank)."""
    from scipy.stats import rankdata

    return {f"{a}+{b}": ((rankdata(series[a]) + rankdata(series[b])) / 2).tolist()
            for a, b in COMBINED if a in series and b in series}


def correlations(plan: dict[str, dict], rows: dict[str, dict], truth_of: dict[str, float] | None
                 ) -> tuple[dict[str, dict], dict[str, list]]:
    """Rank metrics of every proxy against the truth, over the architectures all stages scored."""
    import numpy as np

    from gtn_nas.commands.rank import rank_metrics
    from gtn_nas.search.store import score_column

    def complete(name: str, i: int) -> bool:
        return all(rows[name][i].get(score_column(p)) is not None for p in plan[name]["proxies"])

    common = sorted(set.intersection(*(set(r) for r in rows.values())))
    common = [i for i in common if all(complete(name, i) for name in rows)]
    for i in common:  # same seed, same index: the same architecture everywhere
        genos = {rows[s][i]["genotype"] for s in rows}
        if len(genos) != 1:
            raise SystemExit(f"architecture {i} differs between stages: {sorted(genos)}")
    if truth_of is None:
        truth = np.array([rows["truth"][i]["real_score"] for i in common])
    else:
        common = [i for i in common if rows["proxy"][i]["genotype"] in truth_of]
        truth = np.array([truth_of[rows["proxy"][i]["genotype"]] for i in common])
    series = series_of(plan, rows, common)
    series.update(combined(series))
    idx = np.array(common)
    metrics = {k: rank_metrics(np.array(v, float), truth, idx) for k, v in series.items()}
    series["truth"] = truth.tolist()
    series["idx"] = common
    return metrics, series


TARGET_RIVALS = ("real", "real-long", "params")  # issue #22: the GTN must beat each of these


def paired_wins(series: dict[str, list], of: str = "gtn") -> dict[str, float | None]:
    """How often ``of``'s ρ beats each rival's over the same bootstrap resamples of the
    architectures: the paired reading of the targets, which 50 cells cannot settle by ρ alone."""
    import numpy as np

    from gtn_nas.commands.rank import bootstrap_spearman

    rivals = [k for k in TARGET_RIVALS if k in series]
    if of not in series or not rivals:
        return {}
    rho = bootstrap_spearman(np.array([series[of]] + [series[k] for k in rivals], float),
                             np.array(series["truth"], float))
    ok = np.isfinite(rho).all(axis=0)  # resamples where every rho is defined (none: None)
    return {k: float(np.mean(rho[0, ok] > rho[j + 1, ok])) if ok.any() else None
            for j, k in enumerate(rivals)}


def plot(series: dict[str, list], metrics: dict[str, dict], labels: dict[str, str], out: Path,
         truth_label: str) -> list[str]:
    from gtn_nas.io import plots

    paths = []
    for k in labels:
        p = out / f"proxy-{k}.png"
        rho = metrics[k]["spearman"]
        plots.scatter(series[k], series["truth"], p, labels[k], truth_label,
                      f"{labels[k]} vs truth, n={metrics[k]['n']}, "
                      f"Spearman {rho if rho is None else round(rho, 3)}")
        paths.append(str(p))
    return paths


def curve(metrics: dict[str, dict], steps: int, long_steps: int, out: Path) -> tuple[dict, str | None]:
    """rho against proxy steps, GTN vs real data (the paper's "9x" figure), with params and the
    best zero-cost proxy as flat references; the PNG's path (None without two points)."""
    from gtn_nas.io import plots

    def rho(k):
        return metrics[k]["spearman"]

    real = sorted([(int(k[5:]), rho(k)) for k in metrics if k.startswith("real@")]
                  + [(steps, rho("real")), (long_steps, rho("real-long"))])
    gtn = sorted([(int(k[4:]), rho(k)) for k in metrics if k.startswith("gtn@")]
                 + ([(steps, rho("gtn"))] if "gtn" in metrics else []))
    points = {"real data": real, "GTN": gtn}
    lo, hi = real[0][0], real[-1][0]
    flat = {"params": rho("params")}
    zc = [k for k in ZERO_COST_PROXIES if k in metrics and rho(k) is not None]
    if zc:
        best = max(zc, key=rho)
        flat[f"{best} (best zero-cost)"] = rho(best)
    series = {name: ([s for s, r in pts if r is not None], [r for s, r in pts if r is not None])
              for name, pts in points.items() if pts}
    series.update({name: ([lo, hi], [r, r]) for name, r in flat.items() if r is not None})
    if len(real) < 2:
        return points, None
    path = out / "rho_vs_steps.png"
    plots.curves(series, path, "proxy steps", "Spearman rho with the truth",
                 "rank correlation vs proxy steps", logx=True)
    return points, str(path)


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def main() -> None:
    reuse_freed_memory()  # before JAX starts its threads (gtn_nas/io/hostmem.py)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gtn", default=None, help="`gtn-nas meta-train` run directory (none: no "
                    "GTN proxy; then give --steps and --dataset)")
    ap.add_argument("--dataset", default=None, help="data set (default: the GTN's)")
    ap.add_argument("--space", default="nb201")
    ap.add_argument("--archs", type=int, default=50, help="architectures (search indices 0..N-1)")
    ap.add_argument("--seed", type=int, default=0, help="search seed")
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--cells", type=int, default=1)
    ap.add_argument("--eval-subset", type=int, default=2000, help="validation images scored on")
    ap.add_argument("--steps", type=int, default=None, help="proxy steps T (default: the GTN's)")
    ap.add_argument("--long-factor", type=int, default=9, help="real-long proxy: this x T steps")
    ap.add_argument("--curve", default="", help="comma-separated shorter step counts for the "
                    "rho-vs-steps curve (real data at each; the GTN at each below T)")
    ap.add_argument("--zero-cost", action="store_true", help="also score the zero-cost proxies "
                    f"({', '.join(ZERO_COST_PROXIES)})")
    ap.add_argument("--zc-batch-size", type=int, default=64)
    ap.add_argument("--gtn-bn-real", action="store_true", help="also score the GTN proxy with "
                    "batch-norm statistics of one real batch (search --gtn-bn real)")
    ap.add_argument("--real-lr", type=float, default=0.1)
    ap.add_argument("--real-momentum", type=float, default=0.9)
    ap.add_argument("--truth", choices=("long", "nb201"), default="long", help="long: real data "
                    "for --truth-steps; nb201: the NAS-Bench-201 table (CIFAR-10 test accuracy)")
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
    args.curve = sorted({int(c) for c in args.curve.split(",") if c.strip()})
    if not args.gtn and not (args.steps and args.dataset):
        raise SystemExit("without --gtn give --steps (the proxy length T) and --dataset")
    if args.truth == "nb201" and (args.dataset or "cifar10") != "cifar10":
        raise SystemExit("--truth nb201 is the benchmark's CIFAR-10 table: use --dataset cifar10")
    enable_compilation_cache()
    m = machine()
    print("machine:", describe(m))
    steps = args.steps or read_json(Path(args.gtn) / "config.json")["inner_steps"]
    plan = stages(args, steps)
    deadline = time.time() + (args.time_budget if args.time_budget else float("inf"))
    walls = {} if args.analyze_only else run_stages(args, plan, deadline)
    rows = table(plan)
    truth_of = None
    if args.truth == "nb201":
        from gtn_nas.commands.rank import nb201_truth

        truth_of = nb201_truth(args.data_dir)
    metrics, series = correlations(plan, rows, truth_of)
    n = len(series["idx"])
    if n < 2:
        raise SystemExit(f"only {n} architecture(s) scored by every stage; nothing to correlate")
    long_steps = args.long_factor * steps
    labels = {"gtn": f"GTN proxy, {steps} steps", "real": f"real data, {steps} steps",
              "real-long": f"real data, {long_steps} steps", "params": "parameter count",
              "flops": "FLOPs"}
    labels.update({k: k for k in ZERO_COST_PROXIES})
    gtn_names = {"gtn": "GTN", "gtn-bnreal": "GTN (real-data BN)"}
    labels.update({f"{a}+{b}": f"rank mean of {gtn_names[a]} and {b}" for a, b in COMBINED})
    labels.update({k: f"{'GTN proxy' if k.startswith('gtn') else 'real data'}, "
                   f"{k.split('@')[1]} steps" for k in plan if "@" in k})
    labels["gtn-bnreal"] = f"GTN proxy, {steps} steps, BN statistics of real data"
    labels = {k: v for k, v in labels.items() if k in series}
    out = Path(args.out)
    truth_label = ("NB201 CIFAR-10 test accuracy %" if truth_of is not None
                   else "truth: val accuracy after long training")
    figures = plot(series, metrics, labels, out, truth_label)
    points, rho_png = curve(metrics, steps, long_steps, out)
    if rho_png:
        figures.append(rho_png)
    per_arch = {}
    for name, over in plan.items():
        for c in over["proxies"]:
            if c in ("params", "flops"):
                continue
            tr = [rows[name][i].get(f"{c}_train_s") or 0.0 for i in series["idx"]]
            co = [rows[name][i].get(f"{c}_compile_s") or 0.0 for i in series["idx"]]
            per_arch[f"{name}:{c}"] = {"train_s_mean": sum(tr) / n, "compile_s_mean": sum(co) / n}
    wins = {g: paired_wins(series, g) for g in ("gtn", "gtn-bnreal") if g in series}
    result = {"machine": m, "args": vars(args), "steps": steps, "n": n, "metrics": metrics,
              "gtn_beats_rival_bootstrap": wins,
              "series": series, "rho_vs_steps": points, "stage_wall_s_this_run": walls,
              "per_arch_s": per_arch, "figures": figures}
    truth = series["truth"]
    if truth_of is not None:
        truth_text = (f"Ground truth: the NAS-Bench-201 table's 200-epoch CIFAR-10 test accuracy "
                      f"(range {min(truth):.1f}-{max(truth):.1f}%)")
    else:
        truth_text = (f"Ground truth: {args.truth_steps} real SGD steps, lr {args.truth_lr} cosine "
                      f"to 0, momentum {args.real_momentum} (range {100 * min(truth):.1f}-"
                      f"{100 * max(truth):.1f}%)")
    lines = [f"Machine: {describe(m)}. {n} of {args.archs} architectures scored by every stage "
             f"({args.space}, C={args.channels}, N={args.cells}, search seed {args.seed}, "
             f"{args.eval_subset} validation images). {truth_text}. Real proxies: lr "
             f"{args.real_lr}, momentum {args.real_momentum}, constant.", "",
             "| proxy | Spearman (95% CI) | Kendall | Spearman top 50% | top-10% overlap | truth of its pick (best) | best of 10 | s / arch (train + compile) |",
             "|---|---|---|---|---|---|---|---|"]
    from gtn_nas.commands.rank import format_interval

    scale = 1.0 if truth_of is not None else 100.0  # the table is in percent already
    for k in labels:
        r = metrics[k]
        stage = k if k in plan else "proxy"
        c = per_arch.get(f"{stage}:{plan[stage]['proxies'][0] if stage != 'proxy' else k}")
        secs = (f"{c['train_s_mean']:.1f} + {c['compile_s_mean']:.1f}" if c
                else "its parts'" if "+" in k else "0")
        b = r["best_of_10"]
        best = "n/a" if b is None else f"{scale * b['mean']:.1f} ± {scale * b['std']:.1f}"
        rho = _f(r['spearman']) + format_interval(r.get("spearman_ci95"))
        lines.append(f"| {labels[k]} | {rho} | {_f(r['kendall'])} | "
                     f"{_f(r['spearman_top'])} | {_f(r['top10_overlap'])} | "
                     f"{scale * r['picked_truth']:.1f}% ({scale * r['best_truth']:.1f}%) | {best} | {secs} |")
    if "truth" in plan:
        t = per_arch["truth:real"]
        lines += ["", f"Ground truth cost: {t['train_s_mean']:.1f} s train + {t['compile_s_mean']:.1f} s "
                  "compile per architecture."]
    for g, w in wins.items():
        lines += ["", "Paired bootstrap (the same resamples of the architectures for both): share "
                  f"of resamples in which *{labels[g]}* has the higher Spearman, against " + "; ".join(
                      f"{labels.get(k, k)}: " + ("n/a" if v is None else f"{100 * v:.0f} %")
                      for k, v in w.items()) + "."]
    lines += ["", f"Figures: {', '.join(figures)}."]
    finish(result, lines, out / "proxy.json", "Proxy quality (benchmarks/proxy.py)", not args.no_record)


if __name__ == "__main__":
    main()
