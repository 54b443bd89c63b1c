"""Robustness benchmark: which guard keeps `cpu`-preset meta-training from blowing up.

    python benchmarks/robustness.py --variants paper,bounds,full --meta-seeds 0,1,2 --isa default,AVX2

Each (variant, meta-seed, instruction set) is one `gtn-nas meta-train --preset cpu` run in its
own process (``XLA_FLAGS=--xla_cpu_max_isa=...`` must be set before XLA starts), resumable under
``--out``. Variants switch the guards off from the preset: ``paper`` (the paper's unbounded exp
lr/momentum, no spike rejection, no rollback), ``bounds`` (bounded schedule only), ``guards``
(spike rejection and rollback only), ``full`` (the preset). Reported per run: fresh-learner
validation at the end and at its best, the largest fall below the best reading after step 200,
meta-gradient spikes rejected, rollbacks, the largest meta-gradient norm, meta-train wall.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import finish, isa_env, worst_fall  # noqa: E402

VARIANTS = {
    "paper": ["--lr-max", "0", "--momentum-max", "0", "--spike-factor", "0", "--rollback-drop", "0"],
    "bounds": ["--spike-factor", "0", "--rollback-drop", "0"],
    "guards": ["--lr-max", "0", "--momentum-max", "0"],
    "full": [],
}


def run_one(out: Path, variant: str, seed: int, isa: str, data_dir, iterations) -> dict:
    from gtn_nas.io.runs import read_json, read_jsonl

    cmd = [sys.executable, "-c", "import cli; cli.main()", "meta-train", "--preset", "cpu", "--seed", str(seed),
           "--out", str(out), "--quiet", *VARIANTS[variant]]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    if iterations:
        cmd += ["--iterations", str(iterations)]
    summary_path = out / "summary.json"
    if not (summary_path.exists() and (iterations is None or
                                       read_json(summary_path)["outer_steps"] == iterations)):
        print("running:", f"XLA_FLAGS={isa_env(isa)['XLA_FLAGS']!r}", "gtn-nas", " ".join(cmd[3:]), flush=True)
        subprocess.run(cmd, env=isa_env(isa), check=False,
                       cwd=Path(__file__).resolve().parents[1])
    if not summary_path.exists():
        return {"variant": variant, "seed": seed, "isa": isa, "failed": True}
    s = read_json(summary_path)
    rows = read_jsonl(out / "metrics.jsonl")
    vals = [(r["step"], r["val_acc"]) for r in rows if "val_acc" in r]
    worst_drop = worst_fall(out)
    norms = [r["grad_norm"] for r in rows if "grad_norm" in r]
    moms = [r["mom_max"] for r in rows if "mom_max" in r]
    lrs = [r["lr_max"] for r in rows if "lr_max" in r]
    return {"variant": variant, "seed": seed, "isa": isa, "final_val": s["validation_accuracy"],
            "best_val": s.get("best_validation_accuracy"), "worst_drop_after_200": worst_drop,
            "spikes": s.get("meta_gradient_spikes", 0), "rollbacks": len(s.get("rollbacks", [])),
            "max_grad_norm": max(norms) if norms else None, "wall_s": s["wall_seconds"],
            "max_momentum": max(moms), "max_lr": max(lrs),
            "val_curve": vals}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="paper,bounds,full")
    ap.add_argument("--meta-seeds", default="0,1,2")
    ap.add_argument("--isa", default="default,AVX2", help="comma-separated: default, AVX2, ...")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="runs/bench-robust")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    from benchmarks.common import describe, machine

    m = machine()
    runs = []
    for variant in args.variants.split(","):
        for seed in map(int, args.meta_seeds.split(",")):
            for isa in args.isa.split(","):
                out = Path(args.out) / f"{variant}-s{seed}-{isa}"
                runs.append(run_one(out, variant, seed, isa, args.data_dir, args.iterations))
    lines = [f"Machine: {describe(m)}.", "",
             "| variant | seed | ISA | final val % | best val % | worst fall after 200 (pts) "
             "| spikes | rollbacks | max meta-grad norm | largest step momentum / lr | wall |",
             "|---" * 11 + "|"]
    for r in runs:
        if r.get("failed"):
            lines.append(f"| {r['variant']} | {r['seed']} | {r['isa']} | failed | | | | | | | |")
            continue
        lines.append(f"| {r['variant']} | {r['seed']} | {r['isa']} | {100 * r['final_val']:.2f} "
                     f"| {100 * r['best_val']:.2f} | {100 * r['worst_drop_after_200']:.1f} "
                     f"| {r['spikes']} | {r['rollbacks']} | {r['max_grad_norm']:.3g} "
                     f"| {r['max_momentum']:.2f} / {r['max_lr']:.2f} | {r['wall_s'] / 60:.1f} min |")
    lines += ["", "| variant | runs | final val % min / median / max | runs with a fall > 5 pts |",
              "|---|---|---|---|"]
    for variant in args.variants.split(","):
        ok = [r for r in runs if r["variant"] == variant and not r.get("failed")]
        if not ok:
            continue
        v = sorted(100 * r["final_val"] for r in ok)
        falls = sum(r["worst_drop_after_200"] > 0.05 for r in ok)
        lines.append(f"| {variant} | {len(ok)} | {v[0]:.2f} / {statistics.median(v):.2f} / "
                     f"{v[-1]:.2f} | {falls} |")
    finish({"machine": m, "runs": runs}, lines, Path(args.out) / "robustness.json",
           "Robustness (benchmarks/robustness.py)", not args.no_record)


if __name__ == "__main__":
    main()
