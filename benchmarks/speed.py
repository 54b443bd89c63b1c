"""Speed benchmark: meta-step throughput and FLOP/s against the measured matmul peak, search
architectures per minute (compile time apart), retrain images per second.

    python benchmarks/speed.py --presets cpu                                   # meta-step only
    python benchmarks/speed.py --presets cpu --retrain-arch '|nor_conv_3x3~0|+|...' \\
        --search-gtn runs/bench-teach/cpu-full --search-budgets 20,100
    python benchmarks/speed.py --presets cpu --torch       # + the same meta-step in eager PyTorch
    python benchmarks/speed.py --presets cpu,paper                             # on a GPU
    python benchmarks/speed.py --presets cpu --learner base_fc --learner-width 8 --conv xla,auto
                                   # a conv learner's meta-step, XLA's convolutions vs slices

FLOPs come from XLA's cost analysis of the compiled meta-step; the peak is a float32 matmul
timed in the same process, and counted on a lowering with the inner loop unrolled (XLA's cost
analysis counts a loop body once; see ``scaling.unrolled_flops``). Peak memory is the device's on
accelerators, the process's resident set on CPU; ``--torch`` runs the PyTorch peer in a process of
its own, so both resident sets hold one framework, the data set and its own step.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gtn_nas.io.hostmem import one_call_at_a_time, reuse_freed_memory  # noqa: E402

from benchmarks.common import describe, finish, machine  # noqa: E402
from benchmarks.scaling import WARMUP_STEPS, time_meta_steps  # noqa: E402


def peak_size() -> int:
    import jax

    return 2048 if jax.default_backend() == "cpu" else 8192


def matmul_peak_gflops(n: int | None = None, repeats: int = 10) -> float:
    """A float32 square matmul's FLOP/s at JAX's default precision (TF32 on recent NVIDIA GPUs,
    as the meta-step's own matmuls): n=2048 on CPU, 8192 on an accelerator, where a smaller one
    is too short to time."""
    import jax
    import jax.numpy as jnp

    n = n or peak_size()
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def search_speed(gtn: str, budget: int, data_dir, channels: int | None = None,
                 program: str = "auto") -> dict:
    from gtn_nas.commands import search as lib
    from gtn_nas.config import SearchConfig, build_config

    folder = Path(tempfile.mkdtemp(prefix="speed-search-"))
    try:
        over = dict(gtn=gtn, out=str(folder / "s"), budget=budget, proxies=("gtn",),
                    data_dir=data_dir, program=program)
        if channels:
            over["channels"] = channels
        s = lib.search(build_config(SearchConfig, "cpu", over))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    compile_total = s["gtn_compile_s_mean"] * budget
    return {"budget": budget, "channels": s.get("channels", channels), "wall_s": s["wall_seconds"],
            "archs_per_min": s["archs_per_minute"],
            "compile_s_total": round(compile_total, 1),
            "compile_share": round(compile_total / s["wall_seconds"], 3),
            "train_s_mean": s["gtn_train_s_mean"], "program": s["program"]}


def fresh_process(fn, *args):
    """``fn(*args)`` in a new Python process, as a user's command runs: no compiled program of
    an earlier measurement is reused."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def retrain_speed(arch: str, epochs: int, data_dir) -> dict:
    from gtn_nas.config import RetrainConfig, build_config
    from gtn_nas.commands.retrain import retrain

    folder = Path(tempfile.mkdtemp(prefix="speed-retrain-"))
    try:
        cfg = build_config(RetrainConfig, "cpu", dict(arch=arch, out=str(folder / "r"), epochs=epochs,
                                               data_dir=data_dir))
        s = retrain(cfg)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"arch": arch, "epochs": epochs, "images_per_second": s["images_per_second"],
            "test_acc": s["test_acc"]}


def main() -> None:
    reuse_freed_memory()  # before JAX starts its threads (gtn_nas/io/hostmem.py)
    one_call_at_a_time()  # as meta-train runs its steps
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="cpu")
    ap.add_argument("--steps", type=int, default=10, help="timed meta-steps per preset")
    ap.add_argument("--learner", default=None, help="meta-step learner instead of the preset's")
    ap.add_argument("--learner-width", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=WARMUP_STEPS,
                    help="untimed meta-steps after the first")
    ap.add_argument("--remat", default=None, help="none | step | nested instead of the preset's")
    ap.add_argument("--conv", default=None,
                    help="comma list of GTN_NAS_CONV forms to time each meta-step with "
                         "(auto | xla | slices; gtn_nas/core/nn/spatial.py; default: $GTN_NAS_CONV, "
                         "else auto)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--search-gtn", default=None, help="GTN run to time searches with")
    ap.add_argument("--search-budgets", default="20,100")
    ap.add_argument("--search-programs", default="auto",
                    help="comma list of search --program values to time at each budget, each "
                         "search in a fresh process (nothing compiled carries over)")
    ap.add_argument("--retrain-arch", default=None, help="NB201 string to time a retrain with")
    ap.add_argument("--search-channels", type=int, default=None,
                    help="NB201 channels of the timed searches (default: the search's cpu preset)")
    ap.add_argument("--retrain-epochs", type=int, default=1)
    ap.add_argument("--torch", action="store_true",
                    help="also time the same meta-step in eager PyTorch (benchmarks/torch_meta_step.py)")
    ap.add_argument("--out", default="runs/bench-speed/speed.json")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if args.torch and args.learner not in (None, "mlp", "base_fc"):
        ap.error("--torch mirrors the mlp and base_fc learners only (benchmarks/torch_meta_step.py)")
    m = machine()
    print("machine:", describe(m))
    peak = matmul_peak_gflops()
    print(f"float32 matmul peak: {peak:.1f} GFLOP/s")
    result: dict = {"machine": m, "matmul_peak_gflops": round(peak, 1), "meta_step": {},
                    "search": [], "retrain": None}
    lines = [f"Machine: {describe(m)}. Measured float32 matmul peak ({peak_size()}^3, best of 10): "
             f"{peak:.1f} GFLOP/s.", "",
             "| preset | learner | conv | learners | s / meta-step | compile | GFLOP / step | GFLOP/s "
             "| % of peak | peak memory | page faults / step |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    overrides = {k: v for k, v in (("learner", args.learner), ("learner_width", args.learner_width),
                                   ("remat", args.remat))
                 if v is not None}
    user_conv = os.environ.get("GTN_NAS_CONV")
    convs = (args.conv or user_conv or "auto").split(",")
    torch_rows: list[str] = []
    for preset in args.presets.split(","):
        from gtn_nas.config import MetaTrainConfig, build_config

        cfg = build_config(MetaTrainConfig, preset, overrides)
        learners, learner = cfg.num_learners, cfg.learner
        if cfg.learner_width:
            learner += f" (width {cfg.learner_width})"
        if args.remat:
            learner += f", remat {cfg.remat}"
        for conv in convs:
            os.environ["GTN_NAS_CONV"] = conv  # read when the meta-step is traced
            r = time_meta_steps(preset, 1, learners, args.steps, args.data_dir, overrides,
                                warmup=args.warmup)
            r.update(learner=learner, conv=conv)
            print(json.dumps(r))
            result["meta_step"][f"{preset}/{conv}"] = r
            lines.append(f"| {preset} | {learner} | {conv} | {learners} | {1 / r['steps_per_s']:.3f} "
                         f"| {r['compile_s']:.1f} s | {r['flops_per_step'] / 1e9:.2f} "
                         f"| {r['gflops_per_s']:.1f} | {100 * r['gflops_per_s'] / peak:.1f}% "
                         f"| {r['peak_memory_mb']:.0f} MB | {r['page_faults_per_step']:,} |")
        if user_conv is None:
            os.environ.pop("GTN_NAS_CONV")
        else:
            os.environ["GTN_NAS_CONV"] = user_conv
        if args.torch:
            from benchmarks.torch_meta_step import run_torch_meta_steps

            try:
                tr = run_torch_meta_steps(preset, args.steps, args.data_dir, m["cores"], overrides)
            except RuntimeError as e:
                raise SystemExit(f"speed.py --torch: {e}") from None
            print(json.dumps(tr))
            r["torch"] = tr
            jax_s = 1 / r["steps_per_s"]
            r["jax_over_torch"] = round(jax_s / tr["s_per_step"], 3)
            r["jax_over_torch_memory"] = round(r["peak_memory_mb"] / tr["peak_memory_mb"], 3)
            torch_rows.append(f"| {preset} | {learner} | {jax_s:.3f} | {tr['s_per_step']:.3f} | "
                              f"{r['jax_over_torch']:.2f}x | {r['peak_memory_mb']:.0f} MB | "
                              f"{tr['peak_memory_mb']:.0f} MB | {r['jax_over_torch_memory']:.2f}x "
                              f"| torch {tr['torch']}, {tr['threads']} threads |")
    if torch_rows:
        lines += ["", "| preset | learner | JAX s / meta-step | eager PyTorch s / meta-step | "
                  "JAX / PyTorch time | JAX peak memory | PyTorch peak memory | JAX / PyTorch "
                  "memory | PyTorch |", "|---|---|---|---|---|---|---|---|---|"] + torch_rows
    if args.search_gtn:
        lines += ["", "| search budget | wall | archs/min | compile total | compile share | program |",
                  "|---|---|---|---|---|---|"]
        for b, program in ((int(x), p) for x in args.search_budgets.split(",")
                           for p in args.search_programs.split(",")):
            r = fresh_process(search_speed, args.search_gtn, b, args.data_dir,
                              args.search_channels, program)
            print(json.dumps(r))
            result["search"].append(r)
            lines.append(f"| {b} | {r['wall_s']:.0f} s | {r['archs_per_min']} | "
                         f"{r['compile_s_total']:.0f} s | {100 * r['compile_share']:.0f}% | {r['program']} |")
    if args.retrain_arch:
        r = retrain_speed(args.retrain_arch, args.retrain_epochs, args.data_dir)
        print(json.dumps(r))
        result["retrain"] = r
        lines += ["", f"Retrain (`cpu` preset, {r['epochs']} epoch(s)): "
                  f"{r['images_per_second']:.0f} images/s."]
    finish(result, lines, args.out, "Speed (benchmarks/speed.py)", not args.no_record)


if __name__ == "__main__":
    main()
