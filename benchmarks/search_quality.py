"""How good is what a search finds? Strategies and cascades on NAS-Bench-201 / CIFAR-10, judged
by the true test accuracy of their pick (the NB201 table, which the search never reads).

Each run is the search's own code (``search.cascade.run_cascade``, the strategies, the
``Scorer``) on a *simulated* clock: every evaluation is charged the seconds it took when it was
measured on this machine (training and scoring, building and counting the network, and each
program's compile once per run), so 10 seeds x 3 budgets x N strategies share one store of
evaluations instead of costing hours each. For that the evaluations of every run use one
evaluation seed (``--eval-seed``): a genotype's score is a function of the genotype alone, and
the search seeds vary only the strategies' choices. ``--check-wall`` runs the default cascade
once as a user does (``gtn-nas search --strategy cascade --time-budget``, real wall clock) to
show the simulation's clock agrees with the wall clock.

Resumable: the store of evaluations (``OUT/evaluations.sqlite``) and each finished run
(``OUT/runs.jsonl``) are kept; rerun the command to go on. ``--time-budget`` bounds this script.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import describe, finish, machine  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"

# name -> (strategy, stages, first-stage share of a time budget) of gtn-nas search (a single
# stage: the strategy on that proxy, the whole budget)
CONFIGS = {
    "random:meco": ("random", ("random:meco",), 1.0),
    "random:vote": ("random", ("random:vote",), 1.0),
    "evolution:vote": ("evolution", ("evolution:vote",), 1.0),
    "local:vote": ("local", ("local:vote",), 1.0),
    "cascade": ("cascade", ("evolution:vote", "zico"), 0.7),  # the default (config.py)
    "cascade:zico85": ("cascade", ("evolution:vote", "zico"), 0.85),
    "cascade:real288": ("cascade", ("evolution:vote", "real@288/4x1"), 0.6),
    "cascade:zico-real": ("cascade", ("evolution:vote", "zico", "real@288/4x1"), 0.7),
    "cascade:real32": ("cascade", ("evolution:vote", "real@32/4x1", "real@288/4x1"), 0.6),
    "cascade:gtn": ("cascade", ("evolution:vote", "gtn@32/4x1", "real@288/4x1"), 0.6),
}
ANCHORS = [("optimum of the 15,625 cells", 94.37),
           ("REA, NASWOT paper Table 2 (12,000 s simulated)", 93.92),
           ("random search, NASWOT paper Table 2", 93.70),
           ("NASWOT alone, best of 100 / 1,000", "92.81 / 92.96"),
           ("MF-NAS (GECCO 2024)", 94.36)]


class Charged:
    """One run's view of the shared evaluations: the search's evaluator, plus a clock that
    charges each evaluation its measured seconds."""

    def __init__(self, evaluations, compile_s: dict[str, float]):
        self.ev, self.compile_s = evaluations, compile_s
        self.clock = 0.0
        self.touched: set[tuple[str, str]] = set()  # (genotype, stage) built in this run
        self.compiled: set[str] = set()
        self.count = 0

    def __call__(self, genotype, objective, first=False):
        scores, _ = self.ev(genotype, objective)
        g, f = genotype.to_str(), objective.fidelity.key
        for p in objective.scored:
            _, train_s, compile_s = self.ev.cache[(g, p, f)]
            self.clock += train_s if p != "flops" else 0.0
            what = f"{p}@{f}"
            if compile_s > 0:
                self.compile_s[what] = max(self.compile_s.get(what, 0.0), compile_s)
            if what not in self.compiled:
                self.compiled.add(what)
                self.clock += self.compile_s.get(what, 0.0)
        if (g, objective.label) not in self.touched:  # each stage's evaluation builds anew
            self.touched.add((g, objective.label))
            self.clock += self.ev.cache[(g, "flops", f)][1]  # building and counting
            self.count += 1
        return scores, 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="random:meco,evolution:vote,cascade,cascade:real288",
                   help=f"comma-separated, of {', '.join(CONFIGS)}")
    p.add_argument("--seeds", default="0-9", help="search seeds, e.g. 0-9 or 0,3")
    p.add_argument("--budgets", default="420,900,1800", help="simulated seconds per run")
    p.add_argument("--eval-seed", type=int, default=0)
    p.add_argument("--eta", type=float, default=8.0)
    p.add_argument("--explore-share", type=float, default=None,
                   help="first-stage share of the budget for every config (default: each "
                        "config's own)")
    p.add_argument("--gtn", default=None, help="a CIFAR-10 GTN run for the cascade:gtn config")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--out", default="runs/bench-search-quality")
    p.add_argument("--time-budget", type=float, default=None, help="wall seconds for this script")
    p.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--record", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    t_start = time.time()

    from gtn_nas.commands.rank import nb201_truth
    from gtn_nas.config import SearchConfig, build_config
    from gtn_nas.io.data import load_dataset
    from gtn_nas.meta.gtn import load_gtn
    from gtn_nas.search.cascade import run_cascade
    from gtn_nas.search.driver import Evaluations
    from gtn_nas.search.scorer import Scorer
    from gtn_nas.search.stages import parse_stages
    from gtn_nas.search.store import Store
    from search_spaces import get_space
    import jax

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown configs {unknown}; choose from {', '.join(CONFIGS)}")
    if "cascade:gtn" in configs and not args.gtn:
        p.error("cascade:gtn needs --gtn DIR (a CIFAR-10 GTN)")
    seeds = _ints(args.seeds)
    budgets = [float(b) for b in args.budgets.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    truth = nb201_truth(args.data_dir)
    space = get_space("nb201")
    cfg = build_config(SearchConfig, None, dict(
        strategy="cascade", dataset="cifar10", data_dir=args.data_dir,
        stages=CONFIGS["cascade"][1], budget=1, seed=args.eval_seed, out=str(out / "unused")))
    t0 = time.perf_counter()
    data = load_dataset("cifar10", cfg.data_dir, 0)
    load_s = time.perf_counter() - t0
    teacher = meta = None
    gtn_steps = None
    if args.gtn:
        mcfg, teacher, meta, _ = load_gtn(args.gtn, "best")
        gtn_steps = mcfg.inner_steps
    sizes = {"channels": 16, "cells": 5, "input_shape": list(data.image_shape)}
    scorers: dict = {}

    def scorer_for(c, n):
        if (c, n) not in scorers:
            scorers[(c, n)] = Scorer(cfg, space, teacher, meta, data, {**sizes, "channels": c,
                                                                       "cells": n},
                                     gtn_steps, None, 64, "composed")
        return scorers[(c, n)]

    store = Store(out / "evaluations.sqlite")
    identity = {"channels": 16, "cells": 5, "steps": gtn_steps, "real_steps": None}
    shared = Evaluations(store, scorer_for, args.eval_seed, identity, "bench")
    seed_key = jax.random.PRNGKey(args.eval_seed)
    shared.key_of = lambda g, idx: jax.random.fold_in(seed_key, zlib.crc32(g.encode()) >> 1)
    compile_path = out / "compile_seconds.json"
    compile_s = json.loads(compile_path.read_text()) if compile_path.exists() else {}
    runs_path = out / "runs.jsonl"
    done = {}
    if runs_path.exists():
        for line in runs_path.read_text().splitlines():
            r = json.loads(line)
            done[(r["config"], r["seed"], r["budget"])] = r
    print(f"{len(done)} runs on record, {len(shared.cache)} evaluations stored", flush=True)

    stopped = False
    for budget in budgets:
        for seed in seeds:  # every config of a seed before the next seed: a cut run stays fair
            for name in configs:
                strategy, texts, share = CONFIGS[name]
                stages = parse_stages(texts, channels=16, cells=5, real_steps=None,
                                      gtn_steps=gtn_steps,
                                      vote=("flops", "naswot", "jacov", "meco"))
                if (name, seed, budget) in done:
                    continue
                if args.time_budget is not None and time.time() - t_start >= args.time_budget:
                    stopped = True
                    break
                charged = Charged(shared, compile_s)
                charged.clock = load_s
                t_run = time.perf_counter()
                result = run_cascade(stages, space, seed, charged, lambda: charged.clock,
                                     budget=None, time_budget=budget, eta=args.eta,
                                     explore_share=share if args.explore_share is None
                                     else args.explore_share,
                                     strategy_options={"population": 20, "sample": 5})
                best = result.best()
                rec = {"config": name, "seed": seed, "budget": budget,
                       "pick": best["genotype"], "stage": best["stage"],
                       "truth": truth[best["genotype"]], "archs": len(result.stages[0].genotypes),
                       "per_stage": [len(s.genotypes) for s in result.stages],
                       "oracle_best_of_n": max(truth[g.to_str()] for g in
                                               result.stages[0].genotypes),
                       "charged_s": round(charged.clock, 1),
                       "wall_s": round(time.perf_counter() - t_run, 1)}
                with runs_path.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                compile_path.write_text(json.dumps(compile_s, indent=1))
                done[(name, seed, budget)] = rec
                if not args.quiet:
                    print(f"{name} seed {seed} {budget:.0f}s: {rec['truth']:.2f} "
                          f"({rec['per_stage']} scored; {rec['wall_s']:.0f} s here)", flush=True)
            if stopped:
                break
        if stopped:
            break
    store.close()
    lines, result = _report(done, configs, seeds, budgets, truth, args, stopped)
    if args.plot:
        _plot(done, configs, budgets, out / "search_quality.png")
        lines.append(f"\nFigure: {out / 'search_quality.png'}")
    finish(result, lines, out / "search_quality.json", "Search quality (benchmarks/search_quality.py)",
           args.record and not stopped)
    return 0


def _ints(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b) + 1) if b else [int(a)])
    return out


def _oracle(truth: dict, n: int, trials: int = 2000) -> float:
    """The mean best true accuracy of n uniform draws (with replacement) from the 15,625."""
    import numpy as np

    acc = np.array(list(truth.values()))
    rng = np.random.default_rng(0)
    return float(np.mean(acc[rng.integers(0, len(acc), (trials, max(n, 1)))].max(axis=1)))


def _report(done, configs, seeds, budgets, truth, args, stopped):
    m = machine()
    lines = [f"Machine: {describe(m)}. NB201 / CIFAR-10; truth: the table's 200-epoch test "
             f"accuracy, looked up for each pick only. Simulated clock (measured seconds per "
             f"evaluation), evaluation seed {args.eval_seed}; eta {args.eta:g}; first-stage share "
             f"{args.explore_share or 'per config (search_quality.CONFIGS)'}." + (" Stopped by --time-budget: incomplete." if stopped else ""),
             "", "| config | budget | seeds | true test acc. of the pick, mean ± std (min-max) | "
             "archs scored (first stage, median) | oracle best of that many | per stage |",
             "|---|---|---|---|---|---|---|"]
    table = []
    for budget in budgets:
        for name in configs:
            rs = [done[(name, s, budget)] for s in seeds if (name, s, budget) in done]
            if not rs:
                continue
            acc = [r["truth"] for r in rs]
            n = int(statistics.median(r["archs"] for r in rs))
            sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
            stages = [round(statistics.mean(r["per_stage"][k] for r in rs))
                      for k in range(len(rs[0]["per_stage"]))]
            row = {"config": name, "budget_s": budget, "seeds": len(rs),
                   "mean": statistics.mean(acc), "std": sd, "min": min(acc), "max": max(acc),
                   "archs": n, "oracle": _oracle(truth, n), "per_stage": stages}
            table.append(row)
            lines.append(f"| {name} | {budget / 60:.0f} min | {len(rs)} | {row['mean']:.2f} ± "
                         f"{sd:.2f} ({min(acc):.2f}-{max(acc):.2f}) | {n} | {row['oracle']:.2f} | "
                         f"{' > '.join(map(str, stages))} |")
    lines += ["", "Anchors: " + "; ".join(f"{a}: {v}" for a, v in ANCHORS) + "."]
    return lines, {"machine": machine(), "rows": table, "runs": list(done.values()),
                   "stopped": stopped}


def _plot(done, configs, budgets, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in configs:
        xs, ys, es = [], [], []
        for b in budgets:
            acc = [r["truth"] for (c, _, bb), r in done.items() if c == name and bb == b]
            if acc:
                xs.append(b / 60)
                ys.append(statistics.mean(acc))
                es.append(statistics.stdev(acc) if len(acc) > 1 else 0.0)
        if xs:
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=name)
    ax.axhline(94.37, color="k", lw=0.8, ls="--", label="optimum 94.37")
    ax.set_xlabel("wall time (min, 2 cores, simulated from measured costs)")
    ax.set_ylabel("true test accuracy of the pick (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
