"""`gtn-nas evaluate`: fresh learners after T steps on GTN data vs on real data (paper Fig. 2).

Both sides use the same learner architecture, the same number of steps and batch size and the
same inner loop. The GTN side uses the learned lr/momentum schedule; the real side takes the
best (lr, momentum) of a grid, chosen on validation accuracy, so the comparison is against
real data with tuned hyper-parameters. Test accuracy is reported for both at the chosen settings.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gtn_nas.config import EvaluateConfig
from gtn_nas.errors import ConfigError
from gtn_nas.io.runs import check_writable, save_result
from gtn_nas.core.training import score, train_on_real, train_on_teacher
from gtn_nas.io.ui import Reporter


def _stats(a) -> dict[str, float]:
    a = np.asarray(a, np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max())}


def curve_steps(steps: int) -> list[int]:
    """Powers of two below ``steps``, then ``steps``: where the accuracy-vs-steps curve is read."""
    return [2 ** i for i in range(steps.bit_length()) if 2 ** i < steps] + [steps]


def evaluate(cfg: EvaluateConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    from gtn_nas.io.data import load_dataset
    from gtn_nas.core.learners import make_learner
    from gtn_nas.meta.gtn import build_learner_source, load_gtn
    from gtn_nas.core.learners import fixed_source

    rep = reporter or Reporter(quiet=True)
    mcfg, teacher, meta, gtn_step = load_gtn(cfg.gtn, cfg.checkpoint)
    out = check_writable(Path(cfg.out) if cfg.out else Path(cfg.gtn) / "evaluate.json", is_file=True)
    steps = cfg.steps or mcfg.inner_steps
    if steps > mcfg.inner_steps:
        raise ConfigError(f"--steps {steps} exceeds the GTN's curriculum length {mcfg.inner_steps}")
    data = load_dataset(mcfg.dataset, cfg.data_dir or mcfg.data_dir, mcfg.split_seed)
    shape, classes = data.image_shape, data.num_classes
    source = (fixed_source(make_learner(cfg.learner, shape, classes, mcfg.learner_width))
              if cfg.learner else build_learner_source(mcfg, shape, classes))
    mean, std = data.mean, data.std
    val = (jnp.asarray(data.validation.images), jnp.asarray(data.validation.labels))
    test = (jnp.asarray(data.test.images), jnp.asarray(data.test.labels))
    train = (jnp.asarray(data.train.images), jnp.asarray(data.train.labels))
    root = jax.random.PRNGKey(cfg.seed)
    keys = jnp.stack([jax.random.fold_in(root, i) for i in range(cfg.num_seeds)])
    archs = [source.sample(jax.random.fold_in(root, 10_000 + i)) for i in range(cfg.num_seeds)]
    # Fixed learners: no arch. NB201: int arrays, vmapped. Micro: static genotypes (their
    # parameter shapes differ), so each seed's learner is its own program.
    static = archs[0] is not None and not jax.tree_util.tree_leaves(archs[0])
    arch_axis = None if archs[0] is None or static else 0
    if not static:
        archs = None if archs[0] is None else jnp.stack(archs)

    def per_learner(fn, *args, **kw):
        """fn over every seed's learner: one vmapped call, or one call per static genotype."""
        if not static:
            return jax.device_get(fn(keys, archs, *args, **kw))
        parts = [jax.device_get(fn(keys[i:i + 1], archs[i], *args, **kw))
                 for i in range(cfg.num_seeds)]
        return tuple(np.concatenate(p) for p in zip(*parts))

    # The splits and meta-parameters are arguments, not closed-over constants baked into each
    # program (the whole CIFAR-10 training set would be one).
    arrays = {"meta": meta, "train": train, "val": val, "test": test}

    def both_scores(a, learner, st):
        return score(learner, st, *a["val"], mean, std), score(learner, st, *a["test"], mean, std)

    @functools.partial(jax.jit, static_argnames="n")
    def gtn_scores(keys, archs, a, n=steps):
        def one(k, arch):
            learner = source.build(arch)
            return both_scores(a, learner, train_on_teacher(teacher, learner, a["meta"], k, n))
        return jax.vmap(one, in_axes=(0, arch_axis))(keys, archs)

    @functools.partial(jax.jit, static_argnames="n")
    def real_scores(keys, archs, a, lr, mom, n=steps):
        def one(k, arch):
            learner = source.build(arch)
            st = train_on_real(learner, *a["train"], k, steps=n, batch=mcfg.batch_size, lr=lr,
                               momentum=mom, mean=mean, std=std, num_classes=classes)
            return both_scores(a, learner, st)
        return jax.vmap(one, in_axes=(0, arch_axis))(keys, archs)

    t0 = time.time()
    grid = [(lr, m) for lr in cfg.real_lrs for m in cfg.real_momentums]
    results: list[dict[str, Any]] = []
    shorter = curve_steps(steps)[:-1] if cfg.curve else []
    with rep.progress("evaluate", total=1 + len(grid) + len(shorter)) as bar:
        g_val, g_test = per_learner(gtn_scores, arrays)
        bar.update(1, gtn_val=float(np.mean(g_val)))
        best = None
        for lr, mom in grid:
            r_val, r_test = per_learner(real_scores, arrays, lr, mom)
            row = {"lr": lr, "momentum": mom, "val_mean": float(np.mean(r_val)),
                   "val": r_val.tolist(), "test": r_test.tolist()}
            results.append(row)
            if best is None or row["val_mean"] > best["val_mean"]:
                best = row
            bar.update(1, best_real_val=best["val_mean"])
        assert best is not None
        # Accuracy after fewer steps (the paper's Fig. 2 curve): the GTN's first n batches with
        # their learned lr/momentum vs n real steps at the lr/momentum tuned for the full length.
        gtn_curve, real_curve = [], []
        for n in shorter:
            gtn_curve.append(_stats(per_learner(gtn_scores, arrays, n=n)[1]))
            real_curve.append(_stats(per_learner(real_scores, arrays, best["lr"], best["momentum"],
                                                 n=n)[1]))
            bar.update(1, curve_steps=n)
    summary = {
        "gtn_run": str(cfg.gtn), "gtn_checkpoint": cfg.checkpoint, "gtn_outer_steps": gtn_step,
        "dataset": mcfg.dataset,
        "learner": source.name, "inner_steps": steps, "batch_size": mcfg.batch_size,
        "num_seeds": cfg.num_seeds, "seed": cfg.seed,
        "gtn": {"validation": _stats(g_val), "test": _stats(g_test)},
        "real": {"lr": best["lr"], "momentum": best["momentum"],
                 "validation": _stats(best["val"]), "test": _stats(best["test"])},
        "real_grid": [{k: r[k] for k in ("lr", "momentum", "val_mean")} for r in results],
        "curve": {"steps": shorter + [steps], "gtn_test": gtn_curve + [_stats(g_test)],
                  "real_test": real_curve + [_stats(best["test"])]},
        "wall_seconds": round(time.time() - t0, 1),
    }
    summary["gtn_minus_real_test"] = summary["gtn"]["test"]["mean"] - summary["real"]["test"]["mean"]
    save_result(out, summary)
    pct = lambda s: f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"  # noqa: E731
    rep.table(f"{mcfg.dataset}: {steps} inner steps, {cfg.num_seeds} fresh learners ({source.name})", [
        {"data": "GTN (learned lr/momentum)", "validation %": pct(summary["gtn"]["validation"]),
         "test %": pct(summary["gtn"]["test"])},
        {"data": f"real (lr {best['lr']}, momentum {best['momentum']}, best of {len(grid)})",
         "validation %": pct(summary["real"]["validation"]), "test %": pct(summary["real"]["test"])},
    ])
    rep.info(f"saved {out}")
    return summary
