"""Would running several architectures of a search in lockstep make their steps cheaper?

    python benchmarks/edge_batching.py --archs 2,4

The composed search step (search_spaces/nb201_composed.py) calls one small program per edge op,
and at 8-32 channels XLA:CPU runs them far below the machine's peak (benchmarks/RESULTS.md,
Search cost). K architectures that share an op at an edge could run it as one larger program.
This times an NB201 conv edge (ReLU, 3x3 convolution, batch-norm on the batch's statistics:
forward and VJP) at each stage's shape, per architecture, in three forms:

- ``separate``: K calls of the one-architecture program (what the search does today);
- ``vmap``: one program, ``jax.vmap`` over the architectures (a grouped convolution);
- ``blockdiag``: the K architectures' channels side by side and one convolution with a
  block-diagonal kernel (K times the FLOPs, wider channels).

Every form is checked against ``separate`` before it is timed; rounds alternate the forms.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import describe, machine  # noqa: E402

STAGES = ((28, 8), (14, 16), (7, 32))  # NB201 at C=8 on MNIST-sized inputs: (side, channels)


def edge(p, x):
    import jax

    y = jax.lax.conv_general_dilated(jax.nn.relu(x), p["w"], (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    mean, var = y.mean((0, 1, 2), keepdims=True), y.var((0, 1, 2), keepdims=True)
    return ((y - mean) * jax.lax.rsqrt(var + 1e-5) * p["scale"].reshape(1, 1, 1, -1)
            + p["bias"].reshape(1, 1, 1, -1))


def edge_vjp(p, x, ct):
    import jax

    return jax.vjp(edge, p, x)[1](ct)


def forms(k: int, c: int):
    """name -> (program, arguments-of-K-architectures -> its arguments, its result -> per-arch)."""
    import jax
    import jax.numpy as jnp

    one = jax.jit(edge_vjp)
    mask = jnp.kron(jnp.eye(k), jnp.ones((c, c))).reshape(1, 1, k * c, k * c)

    def side_by_side(p, x, ct):  # arch axis first -> channels of arch i at [i*c, (i+1)*c)
        w = jnp.zeros((3, 3, k * c, k * c))
        for i in range(k):
            w = w.at[:, :, i * c:(i + 1) * c, i * c:(i + 1) * c].set(p["w"][i])
        cat = lambda a: jnp.concatenate(list(a), axis=-1)  # noqa: E731
        return {"w": w, "scale": cat(p["scale"]), "bias": cat(p["bias"])}, cat(x), cat(ct)

    def blockdiag(p, x, ct):
        return edge_vjp({**p, "w": p["w"] * mask}, x, ct)

    def unstack_bd(out):
        (gp, gx) = out
        part = lambda a, i: a[..., i * c:(i + 1) * c]  # noqa: E731
        return [({"w": gp["w"][:, :, i * c:(i + 1) * c, i * c:(i + 1) * c],
                  "scale": part(gp["scale"], i), "bias": part(gp["bias"], i)}, part(gx, i))
                for i in range(k)]

    def separate(p, x, ct):
        return [one(jax.tree.map(lambda a: a[i], p), x[i], ct[i]) for i in range(k)]

    return {
        "separate": (separate, lambda *a: a, lambda out: out),
        "vmap": (jax.jit(jax.vmap(edge_vjp)), lambda *a: a,
                 lambda out: [jax.tree.map(lambda a: a[i], out) for i in range(k)]),
        "blockdiag": (jax.jit(blockdiag), side_by_side, unstack_bd),
    }


def measure(archs: list[int], batch: int, rounds: int, stages=STAGES) -> list[dict]:
    import jax
    import numpy as np

    rows = []
    for k in archs:
        for side, c in stages:
            keys = jax.random.split(jax.random.PRNGKey(k * 1000 + c), 5)
            p = {"w": 0.2 * jax.random.normal(keys[0], (k, 3, 3, c, c)),
                 "scale": 1 + 0.1 * jax.random.normal(keys[1], (k, c)),
                 "bias": 0.1 * jax.random.normal(keys[2], (k, c))}
            x = jax.random.normal(keys[3], (k, batch, side, side, c))
            ct = jax.random.normal(keys[4], (k, batch, side, side, c))
            table = forms(k, c)
            ref = None
            runs = {}
            for name, (prog, arrange, split) in table.items():
                args = arrange(p, x, ct)
                call = lambda a=args, f=prog: f(*a)  # noqa: E731
                got = split(jax.block_until_ready(call()))
                if ref is None:
                    ref = got
                else:  # same gradients as the one-architecture program, every architecture
                    for r, g in zip(ref, got):
                        for a, b in zip(jax.tree.leaves(r), jax.tree.leaves(g)):
                            np.testing.assert_allclose(np.asarray(b), np.asarray(a),
                                                       rtol=2e-3, atol=2e-3)
                runs[name] = (call, [])
            for _ in range(rounds):
                for call, times in runs.values():
                    t0 = time.perf_counter()
                    jax.block_until_ready(call())
                    times.append(time.perf_counter() - t0)
            per = {n: float(np.median(t)) / k * 1e3 for n, (_, t) in runs.items()}
            rows.append({"archs": k, "input": f"{side}x{side}x{c}", "ms_per_arch": per,
                         "ratio": {n: per[n] / per["separate"] for n in per}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", default="2,4", help="comma-separated numbers of architectures")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    rows = measure([int(a) for a in args.archs.split(",")], args.batch, args.rounds)
    print(f"Machine: {describe(machine())}. One NB201 conv edge (ReLU, 3x3 conv, batch-norm), forward + "
          f"VJP, batch {args.batch}; medians of {args.rounds} alternating rounds.\n")
    print("| architectures | input | separate ms / arch | vmap ms / arch | blockdiag ms / arch |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        m, q = r["ms_per_arch"], r["ratio"]
        print(f"| {r['archs']} | {r['input']} | {m['separate']:.2f} | {m['vmap']:.2f} "
              f"({q['vmap']:.2f}x) | {m['blockdiag']:.2f} ({q['blockdiag']:.2f}x) |")


if __name__ == "__main__":
    main()
