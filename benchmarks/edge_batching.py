"""Would running several architectures of a search in lockstep make their steps cheaper?

    python benchmarks/edge_batching.py --archs 2,4

The composed search step (search_spaces/nb201_composed.py) calls one small program per edge op,
and at 8-32 channels XLA:CPU runs them far below the machine's peak (benchmarks/RESULTS.md,
Search cost). K architectures that share an op at an edge could run it as one larger program.
This times an NB201 3x3 conv edge, the search's own ``ActConvBN`` (activation, weight-normalised
convolution, batch-norm in train mode: forward and VJP), at each stage's shape, per
architecture, in three forms:

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


def edge_vjp(module, p, s, x, ct):
    """The edge's forward and VJP (parameters, input) in train mode, as the search's step runs it."""
    import jax

    def apply(p, x):
        return module.apply({"params": p, "batch_stats": s}, x, train=True,
                            mutable=["batch_stats"])[0]

    return jax.vjp(apply, p, x)[1](ct)


def forms(k: int, c: int):
    """name -> (program, arguments-of-K-architectures -> its arguments, its result -> per-arch)."""
    import jax
    import jax.numpy as jnp

    from search_spaces.ops import ActConvBN

    one = jax.jit(lambda p, s, x, ct: edge_vjp(ActConvBN(c), p, s, x, ct))
    wide = ActConvBN(k * c)
    # Each output channel's weight norm then spans its own architecture's block only.
    mask = jnp.kron(jnp.eye(k), jnp.ones((c, c))).reshape(1, 1, k * c, k * c)
    cat = lambda a: jnp.concatenate(list(a), axis=-1)  # noqa: E731
    part = lambda a, i: a[..., i * c:(i + 1) * c]  # noqa: E731

    def side_by_side(p, s, x, ct):  # arch axis first -> channels of arch i at [i*c, (i+1)*c)
        v = jnp.zeros((3, 3, k * c, k * c))
        for i in range(k):
            v = v.at[:, :, i * c:(i + 1) * c, i * c:(i + 1) * c].set(p["conv"]["v"][i])
        p = jax.tree.map(cat, p)
        return {**p, "conv": {**p["conv"], "v": v}}, jax.tree.map(cat, s), cat(x), cat(ct)

    def blockdiag(p, s, x, ct):
        return edge_vjp(wide, {**p, "conv": {**p["conv"], "v": p["conv"]["v"] * mask}}, s, x, ct)

    def unstack_bd(out):
        (gp, gx) = out
        return [({"bn": jax.tree.map(lambda a: part(a, i), gp["bn"]),
                  "conv": {"g": part(gp["conv"]["g"], i),
                           "v": gp["conv"]["v"][:, :, i * c:(i + 1) * c, i * c:(i + 1) * c]}},
                 part(gx, i)) for i in range(k)]

    def separate(p, s, x, ct):
        at = lambda i: lambda a: a[i]  # noqa: E731
        return [one(jax.tree.map(at(i), p), jax.tree.map(at(i), s), x[i], ct[i])
                for i in range(k)]

    def vmapped(p, s, x, ct):
        return jax.vmap(lambda p, s, x, ct: edge_vjp(ActConvBN(c), p, s, x, ct))(p, s, x, ct)

    return {
        "separate": (separate, lambda *a: a, lambda out: out),
        "vmap": (jax.jit(vmapped), lambda *a: a,
                 lambda out: [jax.tree.map(lambda a: a[i], out) for i in range(k)]),
        "blockdiag": (jax.jit(blockdiag), side_by_side, unstack_bd),
    }


def measure(archs: list[int], batch: int, rounds: int, stages=STAGES) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from search_spaces.ops import ActConvBN

    rows = []
    for k in archs:
        for side, c in stages:
            keys = jax.random.split(jax.random.PRNGKey(k * 1000 + c), k + 2)
            x = jax.random.normal(keys[-2], (k, batch, side, side, c))
            ct = jax.random.normal(keys[-1], (k, batch, side, side, c))
            # each architecture's own initialisation (the search's), stacked on a leading axis
            v = [ActConvBN(c).init(keys[i], x[i], train=True) for i in range(k)]
            p, s = (jax.tree.map(lambda *a: jnp.stack(a), *[vi[col] for vi in v])
                    for col in ("params", "batch_stats"))
            table = forms(k, c)
            ref = None
            runs = {}
            for name, (prog, arrange, split) in table.items():
                args = arrange(p, s, x, ct)
                call = lambda a=args, f=prog: f(*a)  # noqa: E731
                got = split(jax.block_until_ready(call()))
                if ref is None:
                    ref = got
                else:  # same gradients as the one-architecture program, every architecture,
                    # up to float32 rounding at the scale of its largest gradient (the weight
                    # norm's g has a zero gradient under the BN after it: rounding noise only)
                    for r, g in zip(ref, got):
                        scale = max(float(np.abs(a).max()) for a in jax.tree.leaves(r))
                        for a, b in zip(jax.tree.leaves(r), jax.tree.leaves(g)):
                            np.testing.assert_allclose(np.asarray(b), np.asarray(a),
                                                       rtol=2e-3, atol=2e-3 * scale)
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
    print(f"Machine: {describe(machine())}. One NB201 3x3 conv edge (search_spaces.ops.ActConvBN), "
          f"forward + VJP, batch {args.batch}; medians of {args.rounds} alternating rounds.\n")
    print("| architectures | input | separate ms / arch | vmap ms / arch | blockdiag ms / arch |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        m, q = r["ms_per_arch"], r["ratio"]
        print(f"| {r['archs']} | {r['input']} | {m['separate']:.2f} | {m['vmap']:.2f} "
              f"({q['vmap']:.2f}x) | {m['blockdiag']:.2f} ({q['blockdiag']:.2f}x) |")


if __name__ == "__main__":
    main()
