"""Where a meta-step's time goes: per-op timing of the compiled step from a jax.profiler trace.

    python benchmarks/profile_meta_step.py --preset cpu --learner base_fc --learner-width 16
    python benchmarks/profile_meta_step.py --learner base_fc --learner-width 16 --conv xla

XLA:CPU's thunk runtime records one trace event per executed HLO instruction (inside the scan's
while loops too), named as in the compiled module's HLO text. Each event is matched to its
instruction's opcode and classified: convolutions (split by the form XLA's gradients give them,
``lhs_dilate`` = a transposed convolution, ``window_reversal``/``rhs_reversal`` flips), dots,
fusions (by what they fuse), pooling, copies/transposes, the rest. Times are summed over the
intra-op threads, so the total exceeds the wall time on several cores; shares are of that total.
Also printed: the step's wall time, XLA's FLOP count and its compiled temp memory.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gtn_nas.io.hostmem import one_call_at_a_time, reuse_freed_memory  # noqa: E402

from benchmarks.common import (add_meta_step_args, compile_meta_step, describe, finish,  # noqa: E402
                               machine, meta_step_setup)

SKIP = ("end:", "ThreadpoolListener", "ThunkExecutor", "$", "PjitFunction", "ParseArguments",
        "PythonRefManager")


def instruction_table(hlo_text: str) -> dict[str, tuple[str, str]]:
    """HLO instruction name -> (opcode, the whole line) for every instruction of the module."""
    table = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\S.*?\s([a-z][\w\-]*)\(", line)
        if m:
            table[m.group(1)] = (m.group(2), line)
    return table


def fused_kinds(hlo_text: str) -> dict[str, str]:
    """Fused computation name -> what it holds that dominates cost (convolution, dot, reduce...)."""
    kinds, name, body = {}, None, []
    for line in hlo_text.splitlines() + ["}"]:
        m = re.match(r"\s*%?([\w.\-]+)\s.*\{\s*$", line)
        if m and "=" not in line.split("{")[0]:
            name, body = m.group(1), []
            continue
        if name is not None and line.strip() == "}":
            text = "\n".join(body)
            for op in ("convolution", "dot", "reduce-window", "select-and-scatter", "reduce",
                       "scatter", "gather", "transpose", "dynamic-update-slice", "dynamic-slice"):
                if f" {op}(" in text:
                    kinds[name] = op
                    break
            else:
                kinds[name] = "elementwise"
            name = None
            continue
        if name is not None:
            body.append(line)
    return kinds


def classify(opcode: str, line: str, kinds: dict[str, str]) -> str:
    if opcode == "fusion":
        m = re.search(r"calls=%?([\w.\-]+)", line)
        kind = kinds.get(m.group(1), "elementwise") if m else "elementwise"
        if kind == "convolution":
            return "conv " + conv_form(line) + " (fused)"
        return f"fusion: {kind}"
    if opcode == "convolution":
        return "conv " + conv_form(line)
    if opcode in ("reduce-window", "select-and-scatter"):
        return "pooling: " + opcode
    if opcode in ("copy", "transpose"):
        return "copy/transpose"
    if opcode in ("dot", "custom-call"):
        return opcode
    return "other: " + opcode


def conv_form(line: str) -> str:
    if "lhs_dilate=" in line:
        return "lhs-dilated (input grad)"
    if "rhs_reversal" in line or "window_reversal" in line:
        return "reversed window"
    return "plain"


def profile(cfg, data, steps: int) -> dict:
    import jax

    compiled, state, _, arch, images, labels, compile_s = compile_meta_step(cfg, data, donate=True)
    key = jax.random.PRNGKey(0)
    hlo = compiled.as_text()
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    mem = compiled.memory_analysis()
    state, _ = compiled(state, arch, key, images, labels)  # warm
    jax.block_until_ready(state)
    walls = []
    folder = tempfile.mkdtemp(prefix="gtn-profile-")
    jax.profiler.start_trace(folder)
    for s in range(steps):
        t0 = time.perf_counter()
        state, _ = compiled(state, arch, jax.random.fold_in(key, s), images, labels)
        jax.block_until_ready(state)
        walls.append(time.perf_counter() - t0)
    jax.profiler.stop_trace()
    trace = sorted(glob.glob(f"{folder}/**/*.xplane.pb", recursive=True))[-1]
    table, kinds = instruction_table(hlo), fused_kinds(hlo)
    per_op: dict[str, float] = collections.Counter()
    counts: dict[str, int] = collections.Counter()
    for plane in jax.profiler.ProfileData.from_file(trace).planes:
        for line in plane.lines:
            for e in line.events:
                if e.name.startswith(SKIP) or e.name not in table:
                    continue
                per_op[e.name] += e.duration_ns / 1e6 / steps  # ms per meta-step
                counts[e.name] += 1
    per_class: dict[str, float] = collections.Counter()
    for name, ms in per_op.items():
        per_class[classify(*table[name], kinds)] += ms
    total = sum(per_op.values())
    top = []
    for name, ms in sorted(per_op.items(), key=lambda kv: -kv[1])[:15]:
        opcode, line = table[name]
        shape_txt = line.split("=", 1)[1].strip().split(" ")[0][:60]
        top.append({"op": name, "class": classify(opcode, line, kinds), "ms": round(ms, 1),
                    "share": round(ms / total, 4), "calls": counts[name] // steps,
                    "result": shape_txt})
    return {
        "wall_s_per_step": sorted(walls)[len(walls) // 2], "compile_s": round(compile_s, 1),
        "op_ms_total": round(total, 1), "gflop": round(cost.get("flops", 0.0) / 1e9, 2),
        "temp_mb": round(getattr(mem, "temp_size_in_bytes", 0) / 2**20, 1) if mem else None,
        "by_class": {k: {"ms": round(v, 1), "share": round(v / total, 4)}
                     for k, v in sorted(per_class.items(), key=lambda kv: -kv[1])},
        "top_ops": top,
    }


def main() -> None:
    reuse_freed_memory()
    one_call_at_a_time()  # as meta-train runs its steps
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_meta_step_args(p)
    p.add_argument("--conv", default=None, help="$GTN_NAS_CONV for this run: auto | xla | slices")
    p.add_argument("--steps", type=int, default=2, help="profiled meta-steps (after one warm-up)")
    p.add_argument("--out", default="runs/bench-profile")
    p.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = p.parse_args()
    if args.conv:
        os.environ["GTN_NAS_CONV"] = args.conv

    from gtn_nas import enable_compilation_cache

    enable_compilation_cache()
    cfg, data = meta_step_setup(args)
    m = machine()
    r = profile(cfg, data, args.steps)
    conv = os.environ.get("GTN_NAS_CONV", "auto")
    lines = [f"Machine: {describe(m)}. `{args.preset}` preset, learner {args.learner} width "
             f"{args.learner_width}, T={cfg.inner_steps}, B={cfg.batch_size}, meta batch "
             f"{cfg.meta_batch_size}, remat {cfg.remat}, conv {conv}.", "",
             f"Meta-step {r['wall_s_per_step']:.2f} s wall (median of {args.steps}); op time summed "
             f"over threads {r['op_ms_total'] / 1e3:.2f} s; XLA {r['gflop']} GFLOP; compiled temp "
             f"memory {r['temp_mb']} MB; compile {r['compile_s']} s.", "",
             "| op class | ms / step | share |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['ms']:.0f} | {100 * v['share']:.1f}% |" for k, v in r["by_class"].items()]
    lines += ["", "| top ops | class | ms / step | calls / step | result |", "|---|---|---:|---:|---|"]
    lines += [f"| {t['op']} | {t['class']} | {t['ms']:.0f} | {t['calls']} | `{t['result']}` |"
              for t in r["top_ops"][:10]]
    result = {"machine": m, "preset": args.preset, "learner": args.learner, "remat": cfg.remat,
              "learner_width": args.learner_width, "conv": conv, **r}
    finish(result, lines, args.out, "Profile of the conv meta-step (benchmarks/profile_meta_step.py)",
           not args.no_record)


if __name__ == "__main__":
    main()
