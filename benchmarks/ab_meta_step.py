"""Interleaved A/B timing of meta-step variants in one process.

    python benchmarks/ab_meta_step.py --learner base_fc --learner-width 16 \
        --variant GTN_NAS_LAYOUT=nhwc --variant GTN_NAS_LAYOUT=cnhw --rounds 4

Why: on a shared VM the same compiled step drifts by up to 30% within minutes, so two variants
timed in separate runs compare the machine's moods. Here every variant (a set of environment
variables read at trace time, e.g. $GTN_NAS_CONV, $GTN_NAS_LAYOUT) is compiled first, then the
compiled steps run in turn for several rounds (a search-space learner draws a new architecture
each round, the same one for every variant); the medians and the per-round ratios to the first
variant are printed. Nothing is appended to RESULTS.md: quote the printout where it is used.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gtn_nas.io.hostmem import one_call_at_a_time, reuse_freed_memory  # noqa: E402

from benchmarks.common import (add_meta_step_args, compile_meta_step, describe,  # noqa: E402
                               machine, meta_step_setup)


def parse_variant(text: str) -> dict[str, str]:
    env = {}
    for item in filter(None, text.split(",")):
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: a variant is NAME=VALUE[,NAME=VALUE...], got {text!r}")
        env[name.strip()] = value.strip()
    return env


def compile_variant(cfg, data, env: dict[str, str]):
    """The meta-step compiled with ``env`` in force while it is traced; its warm-up meta-loss."""
    import jax

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        compiled, state, source, arch, images, labels, compile_s = compile_meta_step(cfg, data)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    out, metrics = compiled(state, arch, jax.random.PRNGKey(0), images, labels)  # warm
    jax.block_until_ready(out)
    return compiled, state, source, images, labels, compile_s, float(metrics["meta_loss"])


def compare(cfg, data, variants: list[dict[str, str]], rounds: int, log=print) -> list[dict]:
    """Compiles every variant, then steps them in turn ``rounds`` times; one row per variant."""
    import jax

    built = [compile_variant(cfg, data, env) for env in variants]
    times: list[list[float]] = [[] for _ in variants]
    key = jax.random.PRNGKey(1)
    for r in range(rounds):
        for i, (compiled, state, source, images, labels, *_) in enumerate(built):
            arch = source.sample(jax.random.fold_in(key, 100 + r))  # a search space's: per round
            t0 = time.perf_counter()
            out, _ = compiled(state, arch, jax.random.fold_in(key, r), images, labels)
            jax.block_until_ready(out)
            times[i].append(time.perf_counter() - t0)
        log(f"round {r + 1}: " + "  ".join(f"{t[-1]:.3f}" for t in times))
    rows = []
    for env, t, b in zip(variants, times, built):
        ratios = [x / y for x, y in zip(t, times[0])]
        rows.append({"env": env, "median_s": statistics.median(t), "times_s": t,
                     "ratio_to_first": statistics.median(ratios), "compile_s": b[5],
                     "first_meta_loss": b[6]})
    return rows


def main() -> None:
    reuse_freed_memory()
    one_call_at_a_time()  # as meta-train runs its steps
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_meta_step_args(p)
    p.add_argument("--variant", action="append", required=True,
                   help="NAME=VALUE[,NAME=VALUE...] environment of one variant (repeat)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--out", default=None, help="also write the timings as JSON here")
    args = p.parse_args()
    variants = [parse_variant(v) for v in args.variant]

    cfg, data = meta_step_setup(args)
    print(f"Machine: {describe(machine())}. {args.preset} preset, learner {args.learner} width "
          f"{args.learner_width}, remat {cfg.remat}.", flush=True)
    rows = compare(cfg, data, variants, args.rounds, log=lambda m: print(m, flush=True))
    for row in rows:
        print(f"{json.dumps(row['env'])}: median {row['median_s']:.3f} s per meta-step, "
              f"{row['ratio_to_first']:.2f}x the first (per-round), compile "
              f"{row['compile_s']:.1f} s, first meta-loss {row['first_meta_loss']:.6f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
