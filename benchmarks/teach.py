"""Teaching benchmark: fresh learners after 32 inner steps on GTN data vs tuned real data (MNIST).

    python benchmarks/teach.py --preset cpu --meta-seeds 0,1,2 --isa default,AVX2   # headline
    python benchmarks/teach.py --preset cpu --ablation-iterations 150         # + curriculum ablation

Meta-trains with `gtn-nas meta-train` semantics (resumable run directories under --out), then
evaluates the run's best checkpoint with at least 5 new learner seeds on each side and records
the result in RESULTS.md. Several meta-training seeds and instruction sets (each run in its own
process, as ``XLA_FLAGS=--xla_cpu_max_isa=...`` must be set before XLA starts) give the table a
headline needs: meta-training is chaotic, and one good run on one CPU kind is not a result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gtn_nas.io.hostmem import one_call_at_a_time, reuse_freed_memory  # noqa: E402

from benchmarks.common import describe, finish, isa_env, machine, worst_fall  # noqa: E402
from gtn_nas import enable_compilation_cache  # noqa: E402
from gtn_nas.config import EvaluateConfig, MetaTrainConfig, build_config  # noqa: E402
from gtn_nas.commands.evaluate import evaluate  # noqa: E402
from gtn_nas.commands.meta_train import meta_train  # noqa: E402
from gtn_nas.io.runs import read_json  # noqa: E402
from gtn_nas.io.ui import Reporter  # noqa: E402

CURRICULA = ("none", "all_shuffled", "batch_shuffled", "full")


def train_and_eval(preset: str, out: Path, seeds: int, data_dir, rep: Reporter, curve: bool = True,
                   **over) -> dict:
    cfg = build_config(MetaTrainConfig, preset, dict(out=str(out), data_dir=data_dir, **over))
    summary_path = out / "summary.json"
    done = summary_path.exists() and read_json(summary_path).get("outer_steps") == cfg.iterations
    t0 = time.time()
    summary = read_json(summary_path) if done else meta_train(cfg, rep)
    wall = summary["wall_seconds"] if done else round(time.time() - t0, 1)  # before the evaluation
    ev = evaluate(EvaluateConfig(gtn=str(out), data_dir=data_dir, num_seeds=seeds, curve=curve), rep)
    return {"config": {k: getattr(cfg, k) for k in ("preset", "learner", "generator", "inner_steps",
                                                    "batch_size", "iterations", "curriculum", "meta_lr",
                                                    "seed")},
            "meta_train_wall_s": wall, "best_step": summary.get("best_step"),
            "best_val": summary.get("best_validation_accuracy"),
            "spikes": summary.get("meta_gradient_spikes", 0),
            "rollbacks": len(summary.get("rollbacks", [])),
            "worst_fall_after_200": worst_fall(out),
            "gtn_step": ev["gtn_outer_steps"],
            "gtn_test": ev["gtn"]["test"], "real_test": ev["real"]["test"],
            "real_lr": ev["real"]["lr"], "real_momentum": ev["real"]["momentum"],
            "gtn_val": ev["gtn"]["validation"], "real_val": ev["real"]["validation"],
            "curve": ev["curve"]}


def pct(s: dict) -> str:
    return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"


def run_child(args, seed: int, isa: str, out: Path) -> dict:
    """One meta-training seed on one instruction set, in a fresh process; its result JSON."""
    result = out / "teach-run.json"
    if not result.exists():
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--preset", args.preset,
               "--meta-seeds", str(seed), "--seeds", str(args.seeds), "--out", str(out)]
        if args.iterations:
            cmd += ["--iterations", str(args.iterations)]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        print(f"meta-seed {seed}, ISA {isa}: {out}", flush=True)
        done = subprocess.run(cmd, env=isa_env(isa))
        if done.returncode != 0 or not result.exists():
            raise SystemExit(f"the run for meta-seed {seed}, ISA {isa} failed "
                             f"(exit {done.returncode}); see {out}")
    return json.loads(result.read_text())


def main() -> None:
    reuse_freed_memory()  # before JAX starts its threads (gtn_nas/io/hostmem.py)
    one_call_at_a_time()  # as meta-train runs its steps
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--iterations", type=int, default=None, help="meta-steps (default: the preset's)")
    ap.add_argument("--seeds", type=int, default=5, help="fresh learner seeds per side")
    ap.add_argument("--meta-seeds", default="0", help="comma-separated meta-training seeds")
    ap.add_argument("--isa", default="default",
                    help="comma-separated instruction sets: default (XLA's choice), AVX2, ...")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="runs/bench-teach")
    ap.add_argument("--ablation-iterations", type=int, default=0,
                    help="also run the curriculum ablation with this many meta-steps each (0: skip)")
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    enable_compilation_cache()
    rep = Reporter(quiet=args.child)
    out = Path(args.out)
    over = {"iterations": args.iterations} if args.iterations else {}
    seeds = [int(x) for x in args.meta_seeds.split(",")]
    if args.child:  # one run: meta-train + evaluate, result beside the run directory
        res = train_and_eval(args.preset, out, args.seeds, args.data_dir, rep, seed=seeds[0], **over)
        res["machine"] = machine()
        res["xla_flags"] = os.environ.get("XLA_FLAGS", "")
        (out / "teach-run.json").write_text(json.dumps(res, indent=2, default=float) + "\n")
        return
    m = machine()
    print("machine:", describe(m))
    isas = args.isa.split(",")
    runs = []
    for seed in seeds:
        for isa in isas:
            run_dir = out / f"{args.preset}-s{seed}-{isa}"
            r = run_child(args, seed, isa, run_dir)
            runs.append(dict(r, meta_seed=seed, isa=isa, worst_fall_after_200=worst_fall(run_dir)))
    result = {"machine": m, "preset": args.preset, "runs": runs, "ablation": {}}
    lines = [f"Machine: {describe(m)}. Each run: `gtn-nas meta-train --preset {args.preset} --seed S` "
             f"under the instruction set shown, then `gtn-nas evaluate` (its best checkpoint, "
             f"{args.seeds} new learner seeds per side, test set).", "",
             "| meta-seed | ISA | meta-steps | meta-train wall | best val step | GTN test % (32 steps) "
             "| tuned real test % | gap | spikes rejected | rollbacks | worst val fall after 200 |",
             "|---" * 11 + "|"]
    for r in runs:
        gap = 100 * (r["gtn_test"]["mean"] - r["real_test"]["mean"])
        lines.append(f"| {r['meta_seed']} | {r['isa']} | {r['config']['iterations']} "
                     f"| {r['meta_train_wall_s'] / 60:.1f} min | {r['gtn_step']} | {pct(r['gtn_test'])} "
                     f"| {pct(r['real_test'])} (lr {r['real_lr']}, mom {r['real_momentum']}) "
                     f"| {gap:+.2f} | {r['spikes']} | {r['rollbacks']} "
                     f"| {100 * r['worst_fall_after_200']:.1f} pts |")
    gtn = sorted(100 * r["gtn_test"]["mean"] for r in runs)
    gaps = sorted(100 * (r["gtn_test"]["mean"] - r["real_test"]["mean"]) for r in runs)
    walls = [r["meta_train_wall_s"] / 60 for r in runs]
    falls = [100 * r["worst_fall_after_200"] for r in runs]
    lines += ["", f"Over the {len(runs)} runs: GTN test % min / median / max **{gtn[0]:.2f} / "
              f"{statistics.median(gtn):.2f} / {gtn[-1]:.2f}**; gap to tuned real data "
              f"{gaps[0]:+.2f} / {statistics.median(gaps):+.2f} / {gaps[-1]:+.2f} points; "
              f"meta-train wall max {max(walls):.1f} min; worst validation fall after step 200 "
              f"{max(falls):.1f} points. Targets (every run: gap >= +3, wall <= 15 min, fall <= 5): "
              f"**{'met' if gaps[0] >= 3 and max(walls) <= 15 and max(falls) <= 5 else 'not met'}**."]
    if len(runs) == 1:
        c = runs[0]["curve"]
        lines += ["", "Test accuracy % after n inner steps (GTN: its first n batches; real: n steps "
                  "at the lr/momentum tuned for the full length):", "",
                  "| n | " + " | ".join(map(str, c["steps"])) + " |", "|---" * (len(c["steps"]) + 1) + "|",
                  "| GTN | " + " | ".join(pct(r) for r in c["gtn_test"]) + " |",
                  "| real | " + " | ".join(pct(r) for r in c["real_test"]) + " |"]
    if args.ablation_iterations:
        lines += ["", f"Curriculum ablation, {args.ablation_iterations} meta-steps each:", "",
                  "| curriculum | GTN test % | meta-train wall |", "|---|---|---|"]
        for cur in CURRICULA:
            r = train_and_eval(args.preset, out / f"ablation-{cur}", args.seeds, args.data_dir, rep,
                               curve=False, curriculum=cur, iterations=args.ablation_iterations)
            result["ablation"][cur] = r
            lines.append(f"| {cur} | {pct(r['gtn_test'])} | {r['meta_train_wall_s'] / 60:.1f} min |")
    finish(result, lines, out / "teach.json", "Teaching (benchmarks/teach.py)", not args.no_record)


if __name__ == "__main__":
    main()
