"""Why an unguarded `cpu`-preset meta-training blows up: the meta-gradient of a saved GTN under
its learned schedule and under that schedule with momentum and/or lr clipped to the preset's bounds.

    python benchmarks/blowup.py runs/bench-robust/paper-s2-default --learners 16

For each variant of the schedule: the meta-loss and meta-gradient norm over ``--learners`` fresh
learners (median and max, with the share of each meta-parameter group), and a fresh learner's
synthetic-batch loss along the 32 inner steps. A run meta-trained with the paper's unbounded
exp(log) lr and momentum is needed (``--lr-max 0 --momentum-max 0``).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.common import describe, finish, machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="an unguarded meta-training run directory")
    ap.add_argument("--checkpoint", default="last")
    ap.add_argument("--learners", type=int, default=16)
    ap.add_argument("--lr-bound", type=float, default=0.6)
    ap.add_argument("--momentum-bound", type=float, default=0.9)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    from gtn_nas.io.data import load_dataset
    from gtn_nas.meta.gtn import build_learner_source, load_gtn
    from gtn_nas.meta.estimator import make_meta_loss
    from gtn_nas.core.unroll import init_inner_state, unroll

    cfg, teacher, meta, step = load_gtn(args.run, args.checkpoint)
    if "log_mom" not in meta or "log_lr" not in meta:
        raise SystemExit(f"{args.run} has a bounded schedule; give a run meta-trained with "
                         "--lr-max 0 --momentum-max 0")
    data = load_dataset(cfg.dataset, args.data_dir or cfg.data_dir, cfg.split_seed)
    source = build_learner_source(cfg, data.image_shape, data.num_classes)
    learner = source.build(None)
    loss_fn = make_meta_loss(cfg, teacher, source, data.mean, data.std)
    images, labels = jnp.asarray(data.train.images), jnp.asarray(data.train.labels)
    grad_fn = jax.jit(jax.value_and_grad(lambda m, k: loss_fn(m, None, k, images, labels)[0]))

    @jax.jit
    def inner_losses(m, k):
        xs, ys = teacher.generate(m, k)
        lrs, moms = teacher.schedule(m)
        _, losses, _ = unroll(learner, init_inner_state(learner, k), xs, ys, lrs, moms,
                              remat="none")
        return losses

    lr_cap, mom_cap = math.log(args.lr_bound), math.log(args.momentum_bound)
    variants = {
        "learned schedule": meta,
        f"momentum <= {args.momentum_bound}": dict(meta, log_mom=jnp.minimum(meta["log_mom"], mom_cap)),
        f"lr <= {args.lr_bound}": dict(meta, log_lr=jnp.minimum(meta["log_lr"], lr_cap)),
        "both": dict(meta, log_mom=jnp.minimum(meta["log_mom"], mom_cap),
                     log_lr=jnp.minimum(meta["log_lr"], lr_cap)),
    }
    lrs, moms = (np.asarray(x) for x in teacher.schedule(meta))
    m = machine()
    lines = [f"Machine: {describe(m)}. GTN: `{args.run}` at outer step {step} ({args.checkpoint}); "
             f"its learned schedule: lr {lrs.min():.3f}-{lrs.max():.3f} (mean {lrs.mean():.3f}), "
             f"momentum {moms.min():.3f}-{moms.max():.3f}, {int((moms > 1).sum())} of {len(moms)} "
             f"steps with momentum > 1, {int((moms > args.momentum_bound).sum())} above "
             f"{args.momentum_bound}.", "",
             f"| schedule | meta-loss median | meta-grad norm median / max over {args.learners} "
             "learners | share generator / z / lr / momentum (at the max) | synthetic loss at "
             "inner step 1 / 8 / 16 / 24 / 32 (max over learners) |", "|---|---|---|---|---|"]
    result = {"machine": m, "run": args.run, "step": step, "inner_lr": lrs.tolist(),
              "inner_momentum": moms.tolist(), "variants": {}}
    keys = [jax.random.PRNGKey(10_000 + i) for i in range(args.learners)]
    for name, mv in variants.items():
        rows = []
        for k in keys:
            loss, g = grad_fn(mv, k)
            rows.append((float(loss), float(optax.tree.norm(g)),
                         {n: float(optax.tree.norm(v)) for n, v in g.items()}))
        curves = np.stack([np.asarray(inner_losses(mv, k)) for k in keys])  # [learners, T]
        worst = max(rows, key=lambda r: r[1])
        share = {n: (v / worst[1]) ** 2 for n, v in worst[2].items()}
        at = [0, 7, 15, 23, curves.shape[1] - 1]
        lines.append(
            f"| {name} | {statistics.median(r[0] for r in rows):.3f} "
            f"| {statistics.median(r[1] for r in rows):.3g} / {worst[1]:.3g} "
            f"| {share.get('generator', 0):.2f} / {share.get('z', 0):.2f} / "
            f"{share.get('log_lr', 0):.2f} / {share.get('log_mom', 0):.2f} "
            f"| {' / '.join(f'{curves[:, t].max():.3g}' for t in at)} |")
        result["variants"][name] = {"loss": [r[0] for r in rows], "grad_norm": [r[1] for r in rows],
                                    "inner_loss_max": curves.max(0).tolist()}
    finish(result, lines, Path(args.run) / "blowup.json", "Robustness (benchmarks/robustness.py)",
           not args.no_record)


if __name__ == "__main__":
    main()
