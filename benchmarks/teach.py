"""Teaching benchmark: fresh learners after 32 inner steps on GTN data vs tuned real data (MNIST).

    python benchmarks/teach.py --preset cpu --out runs/bench-teach            # main figure
    python benchmarks/teach.py --preset cpu --ablation-iterations 150         # + curriculum ablation

Meta-trains with `gtn-nas meta-train` semantics (resumable run directories under --out), then
evaluates with at least 5 new learner seeds on each side and records the result in RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gtn_nas.hostmem import reuse_freed_memory  # noqa: E402

from benchmarks.common import describe, finish, machine  # noqa: E402
from gtn_nas import enable_compilation_cache  # noqa: E402
from gtn_nas.config import EvaluateConfig, MetaTrainConfig, build_config  # noqa: E402
from gtn_nas.evaluate import evaluate  # noqa: E402
from gtn_nas.meta_train import meta_train  # noqa: E402
from gtn_nas.runs import read_json  # noqa: E402
from gtn_nas.ui import Reporter  # noqa: E402

CURRICULA = ("none", "all_shuffled", "batch_shuffled", "full")


def train_and_eval(preset: str, out: Path, seeds: int, data_dir, rep: Reporter, curve: bool = True,
                   **over) -> dict:
    cfg = build_config(MetaTrainConfig, "meta-train", preset, dict(out=str(out), data_dir=data_dir, **over))
    summary_path = out / "summary.json"
    done = summary_path.exists() and read_json(summary_path).get("outer_steps") == cfg.iterations
    t0 = time.time()
    summary = read_json(summary_path) if done else meta_train(cfg, rep)
    wall = summary["wall_seconds"] if done else round(time.time() - t0, 1)  # before the evaluation
    ev = evaluate(EvaluateConfig(gtn=str(out), data_dir=data_dir, num_seeds=seeds, curve=curve), rep)
    return {"config": {k: getattr(cfg, k) for k in ("preset", "learner", "generator", "inner_steps",
                                                    "batch_size", "iterations", "curriculum", "meta_lr")},
            "meta_train_wall_s": wall,
            "gtn_test": ev["gtn"]["test"], "real_test": ev["real"]["test"],
            "real_lr": ev["real"]["lr"], "real_momentum": ev["real"]["momentum"],
            "gtn_val": ev["gtn"]["validation"], "real_val": ev["real"]["validation"],
            "curve": ev["curve"]}


def pct(s: dict) -> str:
    return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"


def main() -> None:
    reuse_freed_memory()  # before JAX starts its threads (gtn_nas/hostmem.py)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--iterations", type=int, default=None, help="meta-steps (default: the preset's)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="runs/bench-teach")
    ap.add_argument("--ablation-iterations", type=int, default=0,
                    help="also run the curriculum ablation with this many meta-steps each (0: skip)")
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    enable_compilation_cache()
    rep = Reporter()
    m = machine()
    print("machine:", describe(m))
    out = Path(args.out)
    over = {"iterations": args.iterations} if args.iterations else {}
    main_res = train_and_eval(args.preset, out / f"{args.preset}-full", args.seeds, args.data_dir, rep, **over)
    result = {"machine": m, "preset": args.preset, "main": main_res, "ablation": {}}
    gap = 100 * (main_res["gtn_test"]["mean"] - main_res["real_test"]["mean"])
    lines = [f"Machine: {describe(m)}.", "",
             "| preset | meta-steps | meta-train wall | GTN test % (32 steps) | tuned real test % | gap |",
             "|---|---|---|---|---|---|",
             f"| {args.preset} | {main_res['config']['iterations']} | {main_res['meta_train_wall_s'] / 60:.1f} min "
             f"| {pct(main_res['gtn_test'])} | {pct(main_res['real_test'])} (lr {main_res['real_lr']}, "
             f"mom {main_res['real_momentum']}) | {gap:+.2f} |"]
    c = main_res["curve"]
    lines += ["", "Test accuracy % after n inner steps (GTN: its first n batches; real: n steps at the "
              "lr/momentum tuned for the full length):", "",
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
