"""Why search proxies step from Python: one NB201 inner step inside `lax.scan` vs as its own program.

    python benchmarks/scan_vs_step.py --channels 16 --steps 4

Trains a NB201 network (C channels, N=1, MNIST-shaped batches of 128) for a few inner steps three
ways and prints seconds per step: `scan` (the differentiable unroll), `unrolled` (scan with
unroll=True) and `stepped` (`training.SteppedLearner`, a jitted step driven by a Python loop).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gtn_nas.io.hostmem import reuse_freed_memory  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks.common import append_row, describe, machine  # noqa: E402
from gtn_nas.core.training import SteppedLearner  # noqa: E402
from gtn_nas.core.unroll import init_inner_state, unroll  # noqa: E402
from search_spaces import get_space  # noqa: E402

ARCH = "|skip_connect~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|"


def main() -> None:
    reuse_freed_memory()  # before JAX starts its threads (gtn_nas/io/hostmem.py)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    T, B = args.steps, args.batch
    learner = get_space("nb201").learner(ARCH, args.channels, 1, 10, (28, 28, 1))
    xs = jax.random.normal(jax.random.PRNGKey(1), (T, B, 28, 28, 1))
    ys = jax.nn.one_hot(jnp.zeros((T, B), jnp.int32), 10)
    lrs, moms = jnp.full((T,), 0.1), jnp.full((T,), 0.5)
    key = jax.random.PRNGKey(0)
    res = {}
    for mode in ("scan", "unrolled"):
        def f(key, xs, mode=mode):
            fin, _, _ = unroll(learner, init_inner_state(learner, key), xs, ys, lrs, moms,
                               remat="none", scan_unroll=True if mode == "unrolled" else 1)
            return fin.params
        t0 = time.perf_counter()
        c = jax.jit(f).lower(key, xs).compile()
        compile_s = time.perf_counter() - t0
        jax.block_until_ready(c(key, xs))
        t0 = time.perf_counter()
        jax.block_until_ready(c(key, xs))
        res[mode] = (compile_s, (time.perf_counter() - t0) / T)
    sl = SteppedLearner(learner, (0.5,), (0.25,), 1000)
    compile_s = sl.compile(key, [B], (28, 28, 1), 10, jnp.uint8)
    jax.block_until_ready(sl.train(key, xs, ys, lrs, moms))
    t0 = time.perf_counter()
    jax.block_until_ready(sl.train(key, xs, ys, lrs, moms))
    res["stepped"] = (compile_s, (time.perf_counter() - t0) / T)
    m = machine()
    print("machine:", describe(m))
    lines = [f"Machine: {describe(m)}. NB201 C={args.channels} N=1, batch {B}, {T} steps.", "",
             "| inner loop | compile s | s / step |", "|---|---|---|"]
    lines += [f"| {k} | {c:.1f} | {s:.3f} |" for k, (c, s) in res.items()]
    print("\n".join(lines))
    if not args.no_record:
        append_row("Inner loop on XLA CPU (benchmarks/scan_vs_step.py)", "\n".join(lines))


if __name__ == "__main__":
    main()
