"""Where the search's `gtn` proxy spends a step: each per-op program of `--program composed`
(search_spaces/nb201_composed.py) timed as it runs, summed by op, stage shape and direction.

    python benchmarks/composed_ops.py --archs 6 --channels 8

Each program call is waited for (``block_until_ready``) and timed, so the sum is close to the
steps' wall time (dispatches no longer overlap). Architecture 0 compiles the programs and is not
counted; the others are random NB201 genotypes (seed 0), trained for ``--steps`` steps of batch
``--batch`` on MNIST-sized noise: search_cost.py's genotypes and inputs.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine  # noqa: E402
from benchmarks.search_cost import SHAPE, sample_genotypes, step_inputs  # noqa: E402


def op_name(module) -> str:
    name = type(module).__name__.lstrip("_")
    return f"edge {module.candidates[0]}" if name == "NB201Edge" else name


def measure(archs: int, channels: int, cells: int, steps: int, batch: int) -> dict:
    import jax
    import numpy as np

    import search_spaces.nb201_composed as composed
    from search_spaces import get_space

    times: dict = collections.Counter()
    calls: dict = collections.Counter()
    names: dict = {}  # id of a VJP -> (op, shape) of the forward that made it
    on = [False]

    def timed(key, f, *args):
        t0 = time.perf_counter()
        out = jax.block_until_ready(f(*args))
        if on[0]:
            times[key] += time.perf_counter() - t0
            calls[key] += 1
        return out

    train_vjp, head_step, backward, add = (composed._train_vjp, composed._head_step,
                                           composed._backward, composed._add)

    def timed_train_vjp(module, wrt_x):
        f = train_vjp(module, wrt_x)

        def g(p, s, x):
            out = timed((op_name(module), x.shape[1:], "forward"), f, p, s, x)
            names[id(out[1])] = (op_name(module), x.shape[1:])
            return out
        return g

    def timed_head_step(module):
        f = head_step(module)
        return lambda p, s, buf, h, *a: timed(("Head", h.shape[1:], "step"), f, p, s, buf, h, *a)

    composed._train_vjp = timed_train_vjp
    composed._head_step = timed_head_step
    composed._backward = lambda vjp, g, *a: timed((*names.get(id(vjp), ("?", g.shape[1:])),
                                                   "backward"), backward, vjp, g, *a)
    composed._add = lambda a, b: timed(("node sum", a.shape[1:], "-"), add, a, b)
    try:
        shape, space = SHAPE, get_space("nb201")
        xs, ys, lrs, moms = step_inputs(steps, batch)
        wall, genotypes = 0.0, []
        for i, g in enumerate(sample_genotypes(space, 0, archs + 1)):
            net = composed.ComposedNB201(space.build(g, channels, cells, 10, shape), shape,
                                         (0.13,), (0.31,), 1000)
            on[0] = False
            net.compile(jax.random.PRNGKey(0), (batch,), shape, 10, np.uint8)
            st = net.init(jax.random.PRNGKey(i))
            on[0] = i > 0
            t0 = time.perf_counter()
            jax.block_until_ready(net.run(st, xs, ys, lrs, moms))
            if i > 0:
                wall += time.perf_counter() - t0
                genotypes.append(g.to_str())
        on[0] = False
    finally:
        composed._train_vjp, composed._head_step, composed._backward, composed._add = (
            train_vjp, head_step, backward, add)
    total = sum(times.values())
    rows = [{"op": op, "shape": "x".join(map(str, shp)), "direction": d, "s": round(t, 3),
             "calls": calls[(op, shp, d)], "ms_per_call": round(1e3 * t / calls[(op, shp, d)], 2),
             "share": round(t / total, 4)}
            for (op, shp, d), t in sorted(times.items(), key=lambda kv: -kv[1])]
    return {"archs": archs, "genotypes": genotypes, "steps_wall_s": round(wall, 2),
            "timed_s": round(total, 2), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=6, help="timed architectures (+1 warm-up)")
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--cells", type=int, default=1)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    if args.archs < 1:
        ap.error("--archs must be at least 1")
    m = machine()
    r = measure(args.archs, args.channels, args.cells, args.steps, args.batch)
    print(f"Machine: {m['cpu']} ({m['cores']} cores), {m['device']}, jax {m['jax']}. NB201 "
          f"C={args.channels}, N={args.cells}, {args.steps} steps of batch {args.batch}, "
          f"{args.archs} architectures: steps {r['steps_wall_s']:.2f} s wall, "
          f"{r['timed_s']:.2f} s in timed programs.\n")
    print("| op | input | direction | total s | calls | ms / call | share |")
    print("|---|---|---|---:|---:|---:|---:|")
    for row in r["rows"]:
        print(f"| {row['op']} | {row['shape']} | {row['direction']} | {row['s']:.2f} | "
              f"{row['calls']} | {row['ms_per_call']:.2f} | {100 * row['share']:.1f}% |")


if __name__ == "__main__":
    main()
