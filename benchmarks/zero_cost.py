"""Zero-cost proxies against NAS-Bench-201's CIFAR-10 table: do they reproduce the published ρ?

    python benchmarks/zero_cost.py --archs 200 --out runs/bench-zero-cost

A `gtn-nas search` without a GTN (resumable: the same command continues it) scores ``--archs``
uniformly sampled NB201 cells (search seed ``--seed``) by params, flops and every zero-cost
proxy on the benchmark's network (C=16, N=5 by default) with one fixed CIFAR-10 batch; then each
proxy's Spearman and Kendall against the table's 200-epoch test accuracy, top-10 % overlap and
best-of-N (as `gtn-nas rank`), next to the published ρ (over all 15,625 cells: Abdelfattah et
al. 2021, NAS-Bench-Suite-Zero, Mellor et al. 2021). Also synflow recomputed in float32 on the
same networks (ρ between the two, and against the truth) and the seconds per architecture.
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

# Published Spearman ρ on NB201 / CIFAR-10: each zero-cost proxy's from the registry (over all
# 15,625 cells), the parameter count's from Abdelfattah et al. 2021.
TOLERANCE = 0.05
VOTE_POOL = ("params", "flops", "synflow", "naswot", "jacov", "meco", "zico")  # votes tried


def proxies():
    from gtn_nas.search.zero_cost import ZERO_COST

    return ("params", "flops", *ZERO_COST)


def published() -> dict[str, tuple[float, float]]:
    from gtn_nas.search.zero_cost import ZERO_COST

    return {"params": (0.77, 0.77), **{p: z.published for p, z in ZERO_COST.items()}}


def verdict(proxy: str, rho: float | None) -> str:
    pub = published()
    if proxy not in pub or rho is None:
        return "-"
    lo, hi = pub[proxy]
    return "yes" if lo - TOLERANCE <= rho <= hi + TOLERANCE else "no"


def scorer(args, data, **kw):
    """The search's ZeroCostScorer (same sizes, same batch) for re-scoring its rows."""
    from gtn_nas.search.indices import zero_cost_batch_key
    from gtn_nas.search.zero_cost import ZeroCostScorer

    return ZeroCostScorer(args.channels, args.cells, data.num_classes, data.image_shape,
                          data.train.images, data.train.labels, data.mean, data.std, args.batch,
                          zero_cost_batch_key(args.seed), **kw)


def rescore(zc, rows, args, proxies) -> list[dict]:
    """``zc.score`` of every row's genotype, initialised from the row's own key."""
    from gtn_nas.search.indices import architecture_keys
    from search_spaces import get_space

    space = get_space("nb201")
    return [zc.score(space.from_str(r["genotype"]), architecture_keys(args.seed, r["idx"])[1],
                     proxies) for r in rows]


def synflow_float32(rows, args, data) -> list[float]:
    """synflow of every row's network in float32, initialised from the same key."""
    zc = scorer(args, data, synflow_dtype="float32")
    return [got["synflow"][0] for got in rescore(zc, rows, args, ["synflow"])]


def retime(rows, args, data) -> dict[str, dict[str, float]]:
    """Seconds per architecture of each zero-cost proxy run alone, and its share when all run
    together (proxies of one pass split it), measured again in this process over ``rows`` (the
    first left out: it compiles XLA's primitives), so that the figure does not depend on how busy
    the machine was while the search ran."""
    import numpy as np

    from gtn_nas.search.indices import architecture_keys
    from gtn_nas.search.zero_cost import ZERO_COST
    from search_spaces import get_space

    zc, space = scorer(args, data), get_space("nb201")
    alone = {p: [] for p in ZERO_COST}
    together = {p: [] for p in ZERO_COST}
    for n, r in enumerate(rows):
        g, key = space.from_str(r["genotype"]), architecture_keys(args.seed, r["idx"])[1]
        for p in ZERO_COST:
            got = zc.score(g, key, [p])[p][1]
            if n:
                alone[p].append(got)
        got = zc.score(g, key, list(ZERO_COST))
        if n:
            for p in ZERO_COST:
                together[p].append(got[p][1])
    if len(rows) < 2:
        return {}
    return {p: {"alone": float(np.mean(alone[p])), "shared": float(np.mean(together[p]))}
            for p in ZERO_COST}


def onehot_timing(rows, args, data) -> dict[str, float]:
    """The alternative ZeroCostScorer does not take: naswot, jacov, snip and grad_norm of the
    one-hot NB201 supernet as one jitted program for every architecture (compile once, every op
    computed); its compile seconds and seconds per architecture over ``rows``."""
    import jax
    import jax.numpy as jnp

    from gtn_nas.search.indices import architecture_keys
    from search_spaces import get_space, nb201

    zc = scorer(args, data)
    net = nb201.build_shared(**zc.sizes, layers="benchmark")
    arch0 = jnp.zeros((6,), jnp.int32)
    init = jax.jit(lambda k: net.init(k, zc.x[:2], arch0, train=True))
    program = jax.jit(lambda p, s, a: zc.batch_scores(net, p, s, a))
    space, compile_s, run_s = get_space("nb201"), None, []
    for r in rows:
        v = init(architecture_keys(args.seed, r["idx"])[1])
        arch = jnp.asarray(nb201.encode(space.from_str(r["genotype"])))
        t0 = time.perf_counter()
        if compile_s is None:
            program = program.lower(v["params"], v["batch_stats"], arch).compile()
            compile_s = time.perf_counter() - t0
            t0 = time.perf_counter()
        jax.block_until_ready(program(v["params"], v["batch_stats"], arch))
        run_s.append(time.perf_counter() - t0)
    return {"compile_s": compile_s, "seconds_per_arch": sum(run_s) / len(run_s), "archs": len(rows)}


def votes(rows, truth, idx, named: tuple[str, ...]) -> list[dict]:
    """rank_metrics of the log-rank vote of every 2-4 proxies of VOTE_POOL and of ``named``,
    best Spearman first (``named`` first of all: chosen beforehand, it is the held-out figure)."""
    import itertools

    import numpy as np

    from gtn_nas.commands.rank import rank_metrics
    from gtn_nas.search.vote import with_vote

    combos = [c for k in (2, 3, 4) for c in itertools.combinations(VOTE_POOL, k)]
    out = []
    for parts in [named] + [c for c in combos if c != named]:
        v = np.array([r["vote_score"] for r in with_vote(rows, parts)])
        out.append({"parts": list(parts), "named": parts == named,
                    **rank_metrics(v, truth, idx)})
    return out[:1] + sorted(out[1:], key=lambda m: -(m["spearman"] or -1))


def _best(b) -> str:
    return ("n/a" if b is None else f"{b['mean']:.2f} ± {b['std']:.2f} ({b['oracle_mean']:.2f})")


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def main() -> None:
    reuse_freed_memory()  # before JAX starts its threads (gtn_nas/io/hostmem.py)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=200, help="architectures (search indices 0..N-1)")
    ap.add_argument("--seed", type=int, default=0, help="search seed (architectures and batch)")
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--cells", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64, help="zero-cost batch size")
    ap.add_argument("--data-dir", default=None, help="holds cifar10/ and nb201/ "
                    "(default $GTN_NAS_DATA_DIR or ../shared/data)")
    ap.add_argument("--time-budget", type=float, default=None, help="seconds for the search")
    ap.add_argument("--no-float32", action="store_true", help="skip the float32 synflow check")
    ap.add_argument("--onehot-archs", type=int, default=0, help="also time the one-hot "
                    "supernet program (one compile for all) on this many architectures")
    ap.add_argument("--time-archs", type=int, default=20,
                    help="architectures re-timed in this process for the seconds per architecture")
    ap.add_argument("--vote", default="flops,naswot,jacov,meco",
                    help="the vote reported first (comma-separated proxies; the default: the "
                    "best best-of-100 among the 5 best votes by Spearman on seed 0)")
    ap.add_argument("--out", default="runs/bench-zero-cost")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    enable_compilation_cache()

    import numpy as np

    from gtn_nas.commands import search as lib
    from gtn_nas.commands.rank import nb201_truth, rank_metrics
    from gtn_nas.config import SearchConfig, build_config
    from gtn_nas.io.data import load_dataset
    from gtn_nas.io.ui import Reporter
    from gtn_nas.search.store import Store, score_column

    m = machine()
    print("machine:", describe(m))
    out = Path(args.out)
    cfg = build_config(SearchConfig, "cpu", dict(
        space="nb201", dataset="cifar10", data_dir=args.data_dir, budget=args.archs,
        seed=args.seed, proxies=proxies(), channels=args.channels, cells=args.cells,
        zc_batch_size=args.batch, out=str(out / "search"), time_budget=args.time_budget))
    t0 = time.time()
    lib.search(cfg, Reporter(quiet=args.quiet))
    wall = time.time() - t0
    with Store(out / "search" / "results.sqlite") as store:
        rows = [r for r in store.rows() if r["idx"] < args.archs]
    truth_of = nb201_truth(args.data_dir)
    rows = [r for r in rows if all(r.get(score_column(p)) is not None for p in proxies())]
    n = len(rows)
    if n < 2:
        raise SystemExit(f"only {n} architecture(s) scored; re-run to continue")
    truth = np.array([truth_of[r["genotype"]] for r in rows])
    idx = np.array([r["idx"] for r in rows])
    metrics = {p: rank_metrics(np.array([float(r[score_column(p)]) for r in rows]), truth, idx)
               for p in proxies()}
    data = load_dataset("cifar10", args.data_dir, 0)  # the search's split (no GTN: seed 0)
    seconds = retime(rows[:args.time_archs + 1], args, data)
    f32 = None
    if not args.no_float32:
        from scipy import stats

        s32 = np.array(synflow_float32(rows, args, data))
        s64 = np.array([r["synflow_score"] for r in rows])
        from gtn_nas.search.store import DEGENERATE

        f32 = {"spearman_f32_f64": float(stats.spearmanr(s32, s64).statistic),
               "overflowed": int(np.sum(s32 == DEGENERATE)),
               "max_rel_diff": float(np.max(np.abs(s32 - s64) / np.maximum(np.abs(s64), 1e-300))),
               "truth": rank_metrics(s32, truth, idx)}
    voted = votes(rows, truth, idx, tuple(args.vote.split(",")))
    onehot = onehot_timing(rows[:args.onehot_archs], args, data) if args.onehot_archs else None
    result = {"machine": m, "args": vars(args), "n": n, "metrics": metrics, "onehot": onehot,
              "seconds_per_arch": seconds, "search_wall_s_this_run": wall, "synflow_float32": f32,
              "published": published(), "votes": voted}
    per_arch = sum(v["shared"] for v in seconds.values())
    lines = [f"Machine: {describe(m)}. {n} NB201 cells sampled uniformly (search seed {args.seed}), "
             f"the benchmark's network at C={args.channels}, N={args.cells} (plain convs, BN, "
             f"ReLU, PyTorch init), one CIFAR-10 (JPEG q75) batch of {args.batch}. Truth: the "
             f"table's 200-epoch CIFAR-10 test accuracy ({truth.min():.1f}-{truth.max():.1f}%). "
             f"Zero-cost seconds per architecture, all {len(seconds)} together: {per_arch:.2f}; each "
             f"alone in the table (mean over "
             f"{args.time_archs} architectures re-timed after one that compiles XLA's "
             "primitives).", "",
             "| proxy | Spearman | Kendall | published ρ | within ±0.05 | top-10% overlap | "
             "best of 10 (oracle) | best of 100 (oracle) | s / arch alone (shared) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in proxies():
        r = metrics[p]
        pub = published().get(p)
        pub_s = "-" if pub is None else (f"{pub[0]:.2f}" if pub[0] == pub[1] else f"{pub[0]:.2f}-{pub[1]:.2f}")
        best = [_best(r[f"best_of_{k}"]) for k in (10, 100)]
        secs = (f"{seconds[p]['alone']:.2f} ({seconds[p]['shared']:.2f})" if p in seconds
                else "0")
        lines.append(f"| {p} | {_f(r['spearman'])} | {_f(r['kendall'])} | {pub_s} | "
                     f"{verdict(p, r['spearman'])} | {_f(r['top10_overlap'])} | {best[0]} | "
                     f"{best[1]} | {secs} |")
    lines += ["", f"Votes (sum of log-ranks, gtn_nas/search/vote.py) over the same {n} cells: the "
              f"named one (--vote {args.vote}, chosen on seed 0) first, then the 5 best "
              f"by Spearman of all {len(voted) - 1} votes of 2-4 of {', '.join(VOTE_POOL)} "
              "(chosen on this sample: optimistic).", "",
              "| vote of | Spearman | Kendall | top-10% overlap | best of 10 (oracle) | "
              "best of 100 (oracle) |", "|---|---|---|---|---|---|"]
    for v in voted[:6]:
        lines.append(f"| {'**' if v['named'] else ''}{'+'.join(v['parts'])}"
                     f"{'**' if v['named'] else ''} | {_f(v['spearman'])} | {_f(v['kendall'])} | "
                     f"{_f(v['top10_overlap'])} | {_best(v['best_of_10'])} | "
                     f"{_best(v['best_of_100'])} |")
    if f32 is not None:
        lines += ["", f"synflow in float32 on the same networks: not finite (overflow) for "
                  f"{f32['overflowed']} of {n}, Spearman with float64 "
                  f"{f32['spearman_f32_f64']:.4f}, largest relative difference "
                  f"{f32['max_rel_diff']:.2g}, Spearman against the truth "
                  f"{_f(f32['truth']['spearman'])} (float64: {_f(metrics['synflow']['spearman'])})."]
    if onehot is not None:
        lines += ["", f"The four batch proxies (naswot, jacov, snip, grad_norm) as one jitted "
                  f"program of the one-hot supernet (every op of every edge computed, one compile "
                  f"for all architectures): compile {onehot['compile_s']:.0f} s, then "
                  f"{onehot['seconds_per_arch']:.1f} s per architecture over {onehot['archs']} "
                  f"(op by op on each genotype's own network, as the search runs them: "
                  f"{sum(seconds[k]['shared'] for k in ('naswot', 'jacov', 'snip', 'grad_norm')):.2f} s)."]
    finish(result, lines, out / "zero_cost.json", "Zero-cost proxies on NB201 (benchmarks/zero_cost.py)",
           not args.no_record)


if __name__ == "__main__":
    main()
