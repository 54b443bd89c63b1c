"""Scaling benchmark: meta-training outer steps/s with the learners sharded over 1, 2, 4 devices.

    python benchmarks/scaling.py --preset cpu --devices 1,2,4 --learners 4
    python benchmarks/scaling.py --preset paper --devices 1 --learners 4      # a GPU machine

On CPU each device count runs in a fresh process with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (the count is fixed when JAX starts);
forced host devices share the machine's cores, so this measures the sharding overhead rather than
a speed-up. On GPUs the real devices are used. Optionally also times ``gtn-nas search`` with 1
and 2 worker processes (``--search-gtn RUN_DIR``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import describe, finish, machine, peak_rss_mb  # noqa: E402
from gtn_nas.io.hostmem import (one_call_at_a_time, release_freed_memory,  # noqa: E402
                                reuse_freed_memory)


def peak_memory_mb() -> float:
    """Peak device memory on an accelerator, else this process's peak resident memory."""
    import jax

    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)() or {}
    if "peak_bytes_in_use" in stats:
        return round(stats["peak_bytes_in_use"] / 2**20, 1)
    return peak_rss_mb()


WARMUP_STEPS = 5


def time_meta_steps(preset: str, devices: int, learners: int, steps: int, data_dir,
                    overrides: dict | None = None, warmup: int = WARMUP_STEPS) -> dict:
    """In this process: compile the sharded outer step, run it ``warmup`` times, then time
    ``steps`` more. ``overrides``: config values on top of the preset's."""
    import jax
    import jax.numpy as jnp

    from gtn_nas.core import distributed as dist
    from gtn_nas.config import MetaTrainConfig, build_config
    from gtn_nas.io.data import load_dataset
    from gtn_nas.commands.meta_train import _keys
    from gtn_nas.meta.gtn import build_learner_source, build_teacher
    from gtn_nas.meta import exact_meta_step
    from gtn_nas.meta.outer import init_meta_state

    cfg = build_config(MetaTrainConfig, preset,
                       dict(overrides or {}, num_learners=learners, devices=devices,
                            data_dir=data_dir))
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.split_seed)
    teacher = build_teacher(cfg, data.image_shape, data.num_classes)
    source = build_learner_source(cfg, data.image_shape, data.num_classes)
    mesh = dist.learner_mesh(cfg.devices, cfg.num_learners)
    k_init, k_steps, _ = _keys(cfg.seed)
    state = dist.replicate(init_meta_state(cfg, teacher, k_init), mesh)
    images, labels = dist.replicate((jnp.asarray(data.train.images),
                                     jnp.asarray(data.train.labels)), mesh)
    arch = source.sample(k_steps)
    put = functools.partial(dist.replicate, mesh=mesh)  # identity without a mesh
    t0 = time.perf_counter()
    step = jax.jit(exact_meta_step(cfg, teacher, source, data.mean, data.std, None, mesh),
                   donate_argnums=0).lower(state, put(arch), put(k_steps), images, labels).compile()
    compile_s = time.perf_counter() - t0
    release_freed_memory()  # as meta-train does after its compile
    flops_rolled = _flops(step.cost_analysis())
    t0 = time.perf_counter()
    state, m = step(state, put(arch), put(jax.random.fold_in(k_steps, 0)), images, labels)
    jax.block_until_ready(m)
    first = time.perf_counter() - t0
    # Warm-up, untimed: the host heap grows to its working size over the first few calls
    # (~50,000 page faults on each of two of them on CPU), a one-off cost of a run.
    for i in range(1, warmup + 1):
        state, m = step(state, put(arch), put(jax.random.fold_in(k_steps, i)), images, labels)
    jax.block_until_ready(m)
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    for i in range(warmup + 1, warmup + steps + 1):
        state, m = step(state, put(arch), put(jax.random.fold_in(k_steps, i)), images, labels)
    jax.block_until_ready(m)
    wall = time.perf_counter() - t0
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / steps
    peak = peak_memory_mb()  # before the FLOP count's unrolled lowering, a benchmark-only cost
    flops = unrolled_flops(lambda scan_unroll: jax.jit(exact_meta_step(
        cfg, teacher, source, data.mean, data.std, None, mesh, scan_unroll)).lower(
        state, put(arch), put(k_steps), images, labels)) if cfg.remat != "nested" else flops_rolled
    return {"devices": jax.device_count() if devices == 0 else devices, "learners": learners,
            "steps": steps, "compile_s": round(compile_s, 2), "first_step_s": round(first, 3),
            "compile_and_first_s": round(compile_s + first, 2),
            "steps_per_s": round(steps / wall, 4), "learners_per_s": round(steps * learners / wall, 3),
            "flops_per_step": flops, "flops_per_step_loop_body_once": flops_rolled,
            "gflops_per_s": round(flops * steps / wall / 1e9, 2),
            "peak_memory_mb": peak, "page_faults_per_step": round(faults),
            "backend": jax.default_backend(), "meta_loss": float(dist.to_host(m["meta_loss"]))}


def _flops(cost) -> float:
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", 0.0))


def unrolled_flops(lower) -> float:
    """FLOPs of one meta-step from XLA's cost analysis of ``lower(scan_unroll=True)``, a lowering
    whose inner-loop scan is fully unrolled. The analysis counts a while loop's body once,
    whatever its trip count (checked: a 10-step scan of a matmul reports one matmul), so the
    compiled, rolled program's figure misses T-1 of the T inner steps. Lowered only (never
    compiled or run): the timed program is the rolled one."""
    return _flops(lower(scan_unroll=True).cost_analysis())


def meta_in_subprocess(args, devices: int) -> dict:
    env = dict(os.environ)
    if args.forced:
        flags = env.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    cmd = [sys.executable, __file__, "--child", str(devices), "--preset", args.preset,
           "--learners", str(args.learners), "--steps", str(args.steps)]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"devices={devices} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_search(gtn: str, workers: int, budget: int, data_dir) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"scaling-search-{workers}-"))
    cmd = [sys.executable, "-c", "import cli; cli.main()", "search", "--gtn", gtn, "--preset", "cpu",
           "--budget", str(budget), "--workers", str(workers), "--out", str(folder / "s"),
           "--proxy", "gtn", "--quiet", "--json"]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise SystemExit(f"search --workers {workers} failed:\n{out.stderr[-2000:]}")
    shutil.rmtree(folder, ignore_errors=True)
    return {"workers": workers, "budget": budget, "wall_s": round(wall, 1),
            "archs_per_min": round(60 * budget / wall, 2)}


def main() -> None:
    reuse_freed_memory()  # before JAX starts its threads (gtn_nas/io/hostmem.py)
    one_call_at_a_time()  # as meta-train runs its steps
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--devices", default="1,2,4", help="comma-separated device counts")
    ap.add_argument("--learners", type=int, default=4, help="learners per outer step")
    ap.add_argument("--steps", type=int, default=5, help="timed outer steps (after one warm-up)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--search-gtn", default=None, help="also time search with 1 and 2 workers")
    ap.add_argument("--search-budget", type=int, default=8)
    ap.add_argument("--out", default="runs/bench-scaling/scaling.json")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(time_meta_steps(args.preset, args.child, args.learners, args.steps,
                                         args.data_dir)))
        return
    m = machine()
    args.forced = m["device"].startswith("cpu")
    print("machine:", describe(m))
    rows = []
    for n in (int(x) for x in args.devices.split(",")):
        r = meta_in_subprocess(args, n)
        print(json.dumps(r))
        rows.append(r)
    base = rows[0]["steps_per_s"]
    kind = "forced host devices" if args.forced else "devices"
    lines = [f"Machine: {describe(m)}. Preset {args.preset}, {args.learners} learners per outer "
             f"step sharded over the `learners` mesh axis ({kind}); {args.steps} timed steps "
             "after one compile+warm-up step.", "",
             "| devices | outer steps/s | learners/s | vs 1 device | compile + first step |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['devices']} | {r['steps_per_s']:.3f} | {r['learners_per_s']:.2f} | "
              f"{r['steps_per_s'] / base:.2f}x | {r['compile_and_first_s']:.1f} s |" for r in rows]
    result = {"machine": m, "preset": args.preset, "meta_train": rows, "search": []}
    if args.search_gtn:
        lines += ["", f"Search fan-out (`--workers`), nb201 cpu preset, gtn proxy, budget "
                  f"{args.search_budget}:", "", "| workers | wall | archs/min |", "|---|---|---|"]
        for w in (1, 2):
            r = time_search(args.search_gtn, w, args.search_budget, args.data_dir)
            print(json.dumps(r))
            result["search"].append(r)
            lines.append(f"| {w} | {r['wall_s']:.0f} s | {r['archs_per_min']:.2f} |")
    finish(result, lines, args.out, "Scaling (benchmarks/scaling.py)", not args.no_record)


if __name__ == "__main__":
    main()
