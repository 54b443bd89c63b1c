"""Seed noise of the trained proxies: how far a proxy's rank correlation moves with the scored
networks' init seed alone, and what averaging seeds or recalibrating batch norm buys.

    python benchmarks/proxy_noise.py --search runs/bench-proxy-mnist/proxy \
        --truth runs/bench-proxy-mnist/truth:real --seeds 3

A search scores each architecture once, with one init seed. At the sizes a CPU affords, that one
draw can move a proxy's Spearman as much as the gaps between proxies, so a table of single-seed
rhos ranks seeds as much as proxies. This benchmark retrains the architectures of a `gtn-nas
search` directory (its GTN, sizes, validation subset and real-data settings; e.g. proxy.py's
``proxy/`` stage) once per seed and scores:

- ``gtn``: the GTN's curriculum with its learned lr/momentum, evaluated as the search does (batch
  norm with the statistics of the last synthetic batch);
- ``gtn-recal``: the same weights, batch-norm statistics recomputed on one real training batch
  of the GTN's batch size before the evaluation (one-shot NAS's "BN recalibration"; the search's
  ``--gtn-bn real``, which takes one fixed batch per search where this draws one per seed);
- ``real``: real data with the search's lr, momentum, batch and steps.

For each: Spearman against the truth (``--truth DIR:proxy``, as `gtn-nas rank`) of every seed
(min / median / max) and of the seed-mean score.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import describe, finish, machine  # noqa: E402

PROXIES = ("gtn", "gtn-recal", "real")
SEED_SALT = 0x5EED5  # fold_in constant: this benchmark's init/data keys, apart from the search's


def seed_scores(genotypes, seeds: int, search_cfg: dict, data_dir: str | None = None,
                log=print) -> dict[str, list[list[float]]]:
    """{proxy: [seed][architecture] validation accuracy} for the search's settings."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gtn_nas.core.images import normalize
    from gtn_nas.core.training import SteppedLearner, lr_schedule, real_batches
    from gtn_nas.io.data import load_dataset, subset
    from gtn_nas.meta.gtn import load_gtn
    from search_spaces import get_space

    mcfg, teacher, meta, _ = load_gtn(search_cfg["gtn"], search_cfg.get("checkpoint", "best"))
    data = load_dataset(mcfg.dataset, data_dir or search_cfg.get("data_dir") or mcfg.data_dir,
                        mcfg.split_seed)
    space = get_space(search_cfg["space"])
    shape, classes = tuple(data.image_shape), data.num_classes
    val = subset(data.validation.images, data.validation.labels, search_cfg["eval_subset"])
    train = (jnp.asarray(data.train.images), jnp.asarray(data.train.labels))
    steps = search_cfg.get("steps") or mcfg.inner_steps
    real_steps = search_cfg.get("real_steps") or steps
    real_batch = search_cfg.get("real_batch_size") or mcfg.batch_size
    real_lrs = lr_schedule(search_cfg["real_lr"], real_steps, search_cfg.get("real_schedule",
                                                                           "constant"))
    real_moms = jnp.full((real_steps,), search_cfg["real_momentum"])
    gtn_lrs, gtn_moms = (a[:steps] for a in teacher.schedule(meta))
    out = {p: [[0.0] * len(genotypes) for _ in range(seeds)] for p in PROXIES}
    root = jax.random.fold_in(jax.random.PRNGKey(search_cfg["seed"]), SEED_SALT)
    for a, g in enumerate(genotypes):
        t0 = time.perf_counter()
        learner = space.learner(g, search_cfg["channels"], search_cfg["cells"], classes, shape)
        stepped = SteppedLearner(learner, data.mean, data.std, min(1000, len(val[1])))
        stepped.compile(jax.random.PRNGKey(0), (teacher.batch_size, real_batch), shape, classes,
                        val[0].dtype)
        for s in range(seeds):
            k_init, k_gtn, k_real, k_bn = jax.random.split(jax.random.fold_in(root, s), 4)
            xs, ys = teacher.generate(meta, k_gtn)
            st = stepped.train(k_init, xs[:steps], ys[:steps], gtn_lrs, gtn_moms)
            out["gtn"][s][a] = stepped.accuracy(st, *val)
            idx = jax.random.randint(k_bn, (teacher.batch_size,), 0, train[0].shape[0])
            recal = stepped.recalibrate(st, normalize(train[0][idx], data.mean, data.std))
            out["gtn-recal"][s][a] = stepped.accuracy(recal, *val)
            rx, ry = real_batches(k_real, *train, real_steps, real_batch, data.mean, data.std)
            st = stepped.train(k_init, rx, jax.nn.one_hot(ry, classes), real_lrs, real_moms)
            out["real"][s][a] = stepped.accuracy(st, *val)
        log(f"{a} {g.to_str()} " + " ".join(
            f"{p} {np.mean([out[p][s][a] for s in range(seeds)]):.3f}" for p in PROXIES)
            + f" ({time.perf_counter() - t0:.1f} s)")
    return out


def noise_table(scores: dict[str, list[list[float]]], truth: list[float]) -> dict[str, dict]:
    """Per proxy: each seed's Spearman, their min/median/max, and the seed-mean score's."""
    import numpy as np
    from scipy.stats import spearmanr

    t = np.asarray(truth, float)

    def rho(v) -> float:  # NaN (a constant score) reads as no correlation at all
        v = np.asarray(v, float)
        return 0.0 if np.all(v == v[0]) else float(spearmanr(v, t).statistic)

    out = {}
    for p, by_seed in scores.items():
        rhos = [rho(v) for v in by_seed]
        out[p] = {"per_seed": rhos, "min": min(rhos), "median": statistics.median(rhos),
                  "max": max(rhos), "seed_mean": rho(np.mean(by_seed, axis=0)),
                  "median_accuracy": float(np.median(by_seed))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--search", required=True, help="a `gtn-nas search` directory with a GTN")
    ap.add_argument("--truth", required=True, help="DIR:proxy, as `gtn-nas rank --truth`")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--archs", type=int, default=0, help="the first N of the search (0: all)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None, help="result JSON (default SEARCH/proxy_noise.json)")
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()

    from gtn_nas import enable_compilation_cache
    from gtn_nas.commands.rank import search_truth
    from gtn_nas.search.store import Store
    from search_spaces import get_space

    cfg = json.loads((Path(args.search) / "config.json").read_text())
    if not cfg.get("gtn") or "gtn" not in cfg.get("proxies", ()):
        raise SystemExit(f"{args.search} is not a search with the gtn proxy")
    folder, _, column = args.truth.rpartition(":")
    truth_of = search_truth(folder, column)
    with Store(Path(args.search) / "results.sqlite") as store:
        rows = sorted(store.rows(), key=lambda r: r["idx"])
    rows = [r for r in rows if r["genotype"] in truth_of][:args.archs or None]
    if len(rows) < 3:
        raise SystemExit(f"only {len(rows)} architectures of {args.search} have a truth value")
    enable_compilation_cache()
    m = machine()
    print("machine:", describe(m), flush=True)
    space = get_space(cfg["space"])
    t0 = time.time()
    scores = seed_scores([space.from_str(r["genotype"]) for r in rows], args.seeds, cfg,
                         args.data_dir, log=lambda s: print(s, flush=True))
    truth = [truth_of[r["genotype"]] for r in rows]
    table = noise_table(scores, truth)
    wall = time.time() - t0
    lines = [f"Machine: {describe(m)}. {len(rows)} architectures of {args.search} ({cfg['space']}, "
             f"C={cfg['channels']}, N={cfg['cells']}, GTN {cfg['gtn']}), {args.seeds} init seeds "
             f"each; truth {args.truth}; {wall / 60:.1f} min.", "",
             "| proxy | Spearman per seed (min / median / max) | Spearman of the seed-mean score "
             "| median validation accuracy |", "|---|---|---|---|"]
    for p, r in table.items():
        lines.append(f"| {p} | {r['min']:.3f} / {r['median']:.3f} / {r['max']:.3f} | "
                     f"{r['seed_mean']:.3f} | {100 * r['median_accuracy']:.1f} % |")
    result = {"machine": m, "args": vars(args), "n": len(rows), "table": table,
              "scores": scores, "truth": truth, "genotypes": [r["genotype"] for r in rows],
              "wall_s": round(wall, 1)}
    finish(result, lines, args.out or Path(args.search) / "proxy_noise.json",
           "Proxy quality (benchmarks/proxy.py)", not args.no_record)


if __name__ == "__main__":
    main()
