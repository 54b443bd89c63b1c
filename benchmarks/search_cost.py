"""Where the search's trained proxy spends its time, per architecture: compile, init, steps, eval.

    python benchmarks/search_cost.py --channels 8 --archs 4
    python benchmarks/search_cost.py --programs exact,composed --archs 8

NB201 genotypes drawn from ``--seed`` are trained as ``gtn-nas search`` trains them on CPU
(``core.training.SteppedLearner`` or ``ComposedNB201``: T inner steps of batch B as separate calls, then accuracy on
``--eval`` images in chunks of 1000), on random inputs: the cost does not depend on the values.
Programs:
- ``exact``: each genotype's own network, so its step and eval programs compile per architecture
  (the search's ``--program exact``);
- ``onehot``: the shared supernet, every op of every edge computed and one-hot weighted, the
  architecture an argument, compiled once (the search's ``--program shared``);
- ``switch``, ``switch-meta``: the shared supernet running each edge's op alone via ``lax.switch``,
  with XLA's convolutions (layers ``gtn``) or slices and matmuls (``gtn_meta``);
- ``composed``: each genotype's own network run as per-op programs every genotype shares
  (``search_spaces.nb201_composed``, the search's ``--program composed``, its CPU default): they
  compile in the first architectures (the "once" figure: the warm-up architecture's), then
  compile / arch is what a later genotype's new ops need.
Architectures run in turn through every program (interleaved: this machine's speed drifts). The
first architecture warms JAX's eager init and is not counted; compile is per architecture for
``exact`` and once for the shared programs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import describe, finish, machine  # noqa: E402

SHARED = {"onehot": ("onehot", "gtn"), "switch": ("switch", "gtn"),
          "switch-meta": ("switch", "gtn_meta")}


def learner_of(program: str, genotype, channels: int, cells: int, shape):
    """What SteppedLearner takes: the genotype's network, or ``arch -> Learner`` (shared)."""
    from search_spaces import get_space, nb201

    if program == "exact":
        return get_space("nb201").learner(genotype, channels, cells, 10, shape)
    mode, layers = SHARED[program]
    return lambda arch: nb201.shared_learner(arch, channels, cells, 10, shape, mode=mode,
                                             layers=layers)


SHAPE = (28, 28, 1)  # MNIST-sized inputs


def sample_genotypes(space, seed: int, n: int) -> list:
    """The ``n`` random genotypes of ``seed`` (the first is the uncounted warm-up)."""
    import jax

    return [space.sample(jax.random.fold_in(jax.random.PRNGKey(seed), i)) for i in range(n)]


def step_inputs(steps: int, batch: int):
    """(xs, ys, lrs, moms) of ``steps`` inner steps of ``batch`` random MNIST-sized images."""
    import jax
    import jax.numpy as jnp

    xs = jax.random.normal(jax.random.PRNGKey(1), (steps, batch, *SHAPE))
    ys = jax.nn.one_hot(jax.random.randint(jax.random.PRNGKey(2), (steps, batch), 0, 10), 10)
    return xs, ys, jnp.full((steps,), 0.05), jnp.full((steps,), 0.5)


def measure(programs, archs: int, seed: int, channels: int, cells: int, steps: int, batch: int,
            eval_images: int, log=print) -> dict:
    """{program: {"compile_s", "init_s", "steps_s", "eval_s", "total_s"}: per-architecture
    medians over ``archs`` genotypes (after one uncounted warm-up architecture)}."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gtn_nas.core.training import SteppedLearner
    from search_spaces import get_space, nb201
    from search_spaces.nb201_composed import ComposedNB201

    shape, space = SHAPE, get_space("nb201")
    genotypes = sample_genotypes(space, seed, archs + 1)
    xs, ys, lrs, moms = step_inputs(steps, batch)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (eval_images, *shape), dtype=np.uint8)
    labels = rng.integers(0, 10, (eval_images,)).astype(np.int32)
    chunk = min(1000, eval_images)
    shared: dict = {}
    rows: dict = {p: [] for p in programs}
    first: dict = {}
    for i, g in enumerate(genotypes):
        arch = jnp.asarray(nb201.encode(g))
        for p in programs:
            if p == "composed":
                stepped = ComposedNB201(space.build(g, channels, cells, 10, shape), shape, (0.13,),
                                        (0.31,), chunk)
                compile_s = stepped.compile(jax.random.PRNGKey(0), (batch,), shape, 10, np.uint8)
            elif p == "exact" or p not in shared:
                stepped = SteppedLearner(learner_of(p, g, channels, cells, shape), (0.13,), (0.31,),
                                         chunk)
                compile_s = stepped.compile(jax.random.PRNGKey(0), (batch,), shape, 10, np.uint8,
                                            None if p == "exact" else arch)
                if p != "exact":
                    shared[p] = (stepped, compile_s)
            else:
                stepped, compile_s = shared[p][0], 0.0
            a = None if p in ("exact", "composed") else arch
            t0 = time.perf_counter()
            st = jax.block_until_ready(stepped.init(jax.random.PRNGKey(i)))
            t1 = time.perf_counter()
            st = jax.block_until_ready(stepped.run(st, xs, ys, lrs, moms, a))
            t2 = time.perf_counter()
            acc = stepped.accuracy(st, images, labels, a)
            t3 = time.perf_counter()
            row = {"compile_s": compile_s, "init_s": t1 - t0, "steps_s": t2 - t1,
                   "eval_s": t3 - t2}
            row["total_s"] = row["compile_s"] + row["init_s"] + row["steps_s"] + row["eval_s"]
            if i > 0:  # architecture 0 warms eager init (compiles its ops once per process)
                rows[p].append(row)
            elif p == "composed":  # its first architecture compiles the per-op programs
                first[p] = compile_s
            log(f"{i} {p:12s} {g.to_str()} " + " ".join(f"{k} {v:.2f}" for k, v in row.items())
                + f" acc {acc:.3f}")
    out = {}
    for p, rs in rows.items():
        out[p] = {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]}
        out[p]["ms_per_step"] = round(1e3 * out[p]["steps_s"] / steps, 1)
        if p in shared or p in first:
            out[p]["compile_once_s"] = round(shared[p][1] if p in shared else first[p], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", default="exact,onehot,switch,switch-meta")
    ap.add_argument("--archs", type=int, default=4, help="timed architectures (+1 warm-up)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--cells", type=int, default=1)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--eval", type=int, default=2000, help="eval images (the search's eval_subset)")
    ap.add_argument("--out", default="runs/bench-search-cost/search_cost.json")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    programs = args.programs.split(",")
    unknown = [p for p in programs if p not in ("exact", "composed") and p not in SHARED]
    if unknown or args.archs < 1:
        ap.error(f"unknown program(s) {unknown}; choose from exact, composed, {', '.join(SHARED)}"
                 if unknown else "--archs must be at least 1")
    m = machine()
    r = measure(programs, args.archs, args.seed, args.channels, args.cells, args.steps, args.batch,
                args.eval)
    lines = [f"Machine: {describe(m)}. NB201 C={args.channels}, N={args.cells}, MNIST-sized "
             f"inputs, {args.steps} steps of batch {args.batch}, eval {args.eval} images; medians "
             f"over {args.archs} architectures (seed {args.seed}) after one warm-up.", "",
             "| program | compile / arch | init | steps | ms / step | eval | total / arch |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for p, v in r.items():
        once = f" (once: {v['compile_once_s']:.1f} s)" if "compile_once_s" in v else ""
        lines.append(f"| {p} | {v['compile_s']:.2f} s{once} | {v['init_s']:.2f} s | "
                     f"{v['steps_s']:.2f} s | {v['ms_per_step']:.0f} | {v['eval_s']:.2f} s | "
                     f"{v['total_s']:.2f} s |")
    finish({"machine": m, "args": vars(args), "programs": r}, lines, args.out,
           "Search cost per architecture (benchmarks/search_cost.py)", not args.no_record)


if __name__ == "__main__":
    main()
