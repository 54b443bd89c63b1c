"""`gtn-nas retrain`: final real-data training of searched genotypes (``gtn_nas.retraining``).

Data: the training split (optionally a fixed seeded subset) lives on the device; epoch e visits it
in the order ``np.random.default_rng([seed, e]).permutation``, dropping the last partial batch, and
step s draws its augmentation and drop-path randomness from ``fold_in(key, s)``. Everything is a
function of (seed, epoch, step), so a run resumed from the checkpoint saved at the end of an epoch
ends with exactly the parameters and figures of an uninterrupted run. An interrupted epoch is
restarted from its beginning.

Validation accuracy is measured after every epoch, test accuracy once at the end.

A run directory holds ``config.json`` (the resolved genotype string, space and sizes),
``metrics.jsonl`` (``kind: "train"`` rows every ``log_every`` steps, ``kind: "epoch"`` rows),
``checkpoints/`` (orbax, the whole train state, every ``checkpoint_every`` epochs),
``summary.json``, ``learning_curve.png`` and ``model.msgpack``: the trained variables
``{"params": ..., "batch_stats": ...}`` serialised with ``flax.serialization.to_bytes``. To use
them, rebuild the network with ``build_model(load_config(RetrainConfig, run_dir /
"config.json"), input_shape, 10)`` and call ``flax.serialization.from_bytes`` on a freshly
initialised variables tree, which is what ``load_model(run_dir)`` does. ``--top K`` retrains the
best K architectures of a search into ``out/NN/`` and writes their results side by side in
``out/summary.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gtn_nas.config import RetrainConfig, load_config
from gtn_nas.core.cost import count_flops, count_params
from gtn_nas.errors import ArchitectureError, CheckpointError, ConfigError, DataError, NonFiniteError
from gtn_nas.io import plots, signals
from gtn_nas.io.checkpoint import Checkpointer
from gtn_nas.io.data import load_dataset, subset
from gtn_nas.io.data.base import IMAGE_SHAPES
from gtn_nas.io.runs import (MetricsLog, check_writable, open_run_dir, run_lock, save_result,
                             write_atomic, write_json)
from gtn_nas.io.ui import Reporter
from gtn_nas.retraining.model import Variables, build_model, init_variables, resolve_sizes
from gtn_nas.retraining.step import (TrainState, eval_chunk, init_train_state, make_accuracy,
                                     make_train_step, sgd_optimizer)
from gtn_nas.search.archs import ArchSpec, resolve_archs

MODEL_FILE = "model.msgpack"


# ---------------------------------------------------------------------------------------------
# Export and reload


def export_model(path: Path, variables: Variables) -> None:
    """``model.msgpack`` and beside it its sha256 (``model.msgpack.sha256``), which
    ``load_model`` checks: msgpack reads a flipped byte in an array back as another number."""
    from flax import serialization

    data = serialization.to_bytes(jax.device_get(variables))
    write_atomic(path, data)
    write_atomic(_digest_path(path), hashlib.sha256(data).hexdigest() + "\n")


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def load_model(run_dir: str | Path, input_shape=None) -> tuple[RetrainConfig, Any, Variables, str]:
    """(config, module, variables, what was loaded) of a retrain run: ``model.msgpack`` when the
    run finished, else its latest checkpoint."""
    from flax import serialization

    run_dir = Path(run_dir)
    cfg = load_config(RetrainConfig, run_dir / "config.json")
    shape = tuple(input_shape or IMAGE_SHAPES[cfg.dataset])
    model = build_model(cfg, shape, 10)
    like = init_variables(model, shape, jax.random.PRNGKey(0))
    path = run_dir / MODEL_FILE
    if path.is_file():
        data = path.read_bytes()
        digest = _digest_path(path)
        if digest.is_file() and digest.read_text().strip() != hashlib.sha256(data).hexdigest():
            raise CheckpointError(f"{path} is damaged: its bytes differ from those exported "
                                  "(sha256 mismatch); delete it and run the retrain command "
                                  "again to export it from the last checkpoint")
        try:
            restored = serialization.from_bytes(like, data)
        except Exception as e:  # msgpack raises many types on a damaged file
            raise CheckpointError(f"{path} is unreadable ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:100] if str(e) else ''}); re-run "
                                  "the retrain command to export it again") from None
        _check_same_shapes(like, restored, path)
        return cfg, model, jax.tree_util.tree_map(jnp.asarray, restored), str(path)
    ckpt = Checkpointer(run_dir / "checkpoints")
    latest = ckpt.latest_step()
    if latest is None:
        raise CheckpointError(f"{run_dir} has neither {MODEL_FILE} nor a checkpoint; run "
                              f"`gtn-nas retrain --out {run_dir}` first")
    tx, _ = sgd_optimizer(cfg, 1)
    opt_like = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype),
                                      jax.eval_shape(tx.init, like["params"]))
    state = TrainState(like["params"], like["batch_stats"], opt_like, np.zeros((), np.int32))
    state = ckpt.restore(latest, state)
    ckpt.close()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return cfg, model, jax.tree_util.tree_map(jnp.asarray, variables), f"checkpoint {latest}"


def _check_same_shapes(like, got, where) -> None:
    a = jax.tree_util.tree_map(np.shape, like)
    b = jax.tree_util.tree_map(np.shape, got)
    if jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(b) or a != b:
        raise CheckpointError(f"{where} does not fit the network in its config.json "
                              "(different shapes)")


# ---------------------------------------------------------------------------------------------
# Driver


def _load_data(cfg: RetrainConfig, cache: dict | None = None):
    cache = {} if cache is None else cache
    if cfg.dataset not in cache:
        cache[cfg.dataset] = load_dataset(cfg.dataset, cfg.data_dir, cfg.split_seed)
    return cache[cfg.dataset]


def for_spec(cfg: RetrainConfig, spec: ArchSpec, **changes) -> RetrainConfig:
    """``cfg`` for one architecture: what the user gave wins; else the data set and sizes its
    search scored it at (a CIFAR-10 search's winner is retrained on CIFAR-10), else defaults."""
    return resolve_sizes(dataclasses.replace(
        cfg, arch=spec.arch, space=spec.space, dataset=cfg.dataset or spec.dataset or "mnist",
        channels=cfg.channels if cfg.channels is not None else spec.channels,
        cells=cfg.cells if cfg.cells is not None else spec.cells, **changes))


def retrain(cfg: RetrainConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Runs (or resumes) `gtn-nas retrain`: one architecture, or the best ``cfg.top`` of a search
    one after another. Returns the summary (also written as summary.json)."""
    rep = reporter or Reporter(quiet=True)
    check_writable(cfg.out)
    specs = resolve_archs(cfg.arch, cfg.space, cfg.top)
    datasets: dict = {}
    if cfg.top is None:
        (spec,) = specs
        one = for_spec(cfg, spec)
        return retrain_one(one, _load_data(one, datasets), rep, origin=spec.origin)
    if len(specs) < cfg.top:
        rep.warn(f"{cfg.arch} lists only {len(specs)} architectures; retraining those")
    out = Path(cfg.out)
    runs = []
    with run_lock(out, "retrain --top"):
        for spec in specs:
            sub = for_spec(cfg, spec, top=None, out=str(out / f"{spec.rank:02d}"))
            rep.info(f"[bold]rank {spec.rank}[/]: {spec.arch}")
            runs.append({"rank": spec.rank, **retrain_one(sub, _load_data(sub, datasets), rep,
                                                         origin=spec.origin)})
    summary = {"out": str(out), "search": cfg.arch, "top": cfg.top, "runs": runs,
               "best_rank": max(runs, key=lambda r: r["best_val_acc"])["rank"]}
    write_json(out / "summary.json", summary)
    rep.table("retrained architectures (test accuracy is reported, not used to choose)", [
        {"rank": r["rank"], "params": r["params"], "best_val_acc": r["best_val_acc"],
         "test_acc": r["test_acc"], "train_s": r["train_seconds"], "arch": r["arch"]}
        for r in runs])
    return summary


def retrain_one(cfg: RetrainConfig, data, rep: Reporter, origin: str = "") -> dict[str, Any]:
    """Trains (or resumes) one architecture in ``cfg.out``; ``cfg.arch`` is a genotype string."""
    with run_lock(cfg.out, "retrain"):
        return _retrain_one(cfg, data, rep, origin)


def _retrain_one(cfg: RetrainConfig, data, rep: Reporter, origin: str) -> dict[str, Any]:
    t_invocation = time.time()
    shape, classes = data.image_shape, data.num_classes
    run_dir, _ = open_run_dir(cfg, cfg.out)
    model = build_model(cfg, shape, classes)

    x_train, y_train = data.train.images, data.train.labels
    if cfg.train_subset:
        x_train, y_train = subset(x_train, y_train, cfg.train_subset, seed=cfg.split_seed)
    x_val, y_val = data.validation.images, data.validation.labels
    if cfg.eval_subset:
        x_val, y_val = subset(x_val, y_val, cfg.eval_subset, seed=cfg.split_seed + 1)
    n_train = len(y_train)
    steps_per_epoch = n_train // cfg.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"batch_size {cfg.batch_size} exceeds the {n_train} training images")
    total_steps = cfg.epochs * steps_per_epoch
    plain = build_model(cfg, shape, classes, auxiliary=False)
    params = count_params(plain, shape)  # without the auxiliary head, as papers count
    rep.info(f"{cfg.space} C={cfg.channels} N={cfg.cells} on {cfg.dataset}: {params:,} parameters, "
             f"{steps_per_epoch} steps/epoch x {cfg.epochs} epochs")

    k_init, k_aug, k_drop = jax.random.split(jax.random.PRNGKey(cfg.seed), 3)
    variables = init_variables(model, shape, k_init)
    state = init_train_state(cfg, variables, steps_per_epoch)

    ckpt = Checkpointer(run_dir / "checkpoints")
    latest = ckpt.latest_step()
    if latest is not None:
        state = jax.tree_util.tree_map(jnp.asarray, ckpt.restore(latest, state))
        if latest % steps_per_epoch or int(state.step) != latest:
            raise CheckpointError(f"checkpoint {latest} in {run_dir} is not at an epoch boundary "
                                  "of this config; use a new --out directory")
        rep.info(f"resuming {run_dir} after epoch {latest // steps_per_epoch}")
    start_epoch = int(state.step) // steps_per_epoch
    log = MetricsLog(run_dir / "metrics.jsonl", resume_step=int(state.step) + 1)

    step_fn = make_train_step(cfg, model, data.mean, data.std, classes, steps_per_epoch)
    accuracy = make_accuracy(model, data.mean, data.std,
                             eval_chunk(cfg, len(data.validation), len(data.test)))
    images_dev, labels_dev = jnp.asarray(x_train), jnp.asarray(y_train)
    batch = cfg.batch_size

    def evaluate_val(st: TrainState) -> float:
        return accuracy({"params": st.params, "batch_stats": st.batch_stats}, x_val, y_val)

    epoch = start_epoch
    mark = signals.received()
    try:
        with rep.progress(f"retrain {cfg.space}", total=total_steps,
                          completed=int(state.step)) as bar:
            for epoch in range(start_epoch, cfg.epochs):
                order = np.random.default_rng([cfg.seed, epoch]).permutation(n_train)
                order = order[:steps_per_epoch * batch].reshape(steps_per_epoch, batch)
                order = order.astype(np.int32)
                t_epoch, pending, sums, shown = time.time(), [], np.zeros(2), 0
                for i in range(steps_per_epoch):
                    signals.raise_if_received_since(mark)  # one that a gc callback swallowed
                    with signals.deferred_interrupts():  # donated `state`: replaced, never lost
                        state, metrics = step_fn(state, images_dev, labels_dev, order[i],
                                                 k_aug, k_drop)
                    pending.append(metrics)
                    if (i + 1) % cfg.log_every == 0 or i + 1 == steps_per_epoch:
                        got = jax.device_get(pending)
                        pending.clear()
                        loss = float(np.mean([m["loss"] for m in got]))
                        acc = float(np.mean([m["acc"] for m in got]))
                        if not np.isfinite(loss):  # before any save of this epoch's state
                            step = epoch * steps_per_epoch + i + 1
                            raise NonFiniteError(
                                f"the training loss became non-finite by step {step} (epoch "
                                f"{epoch + 1}); no model exported, checkpoints keep the last "
                                "finite epoch; lower --lr or set --grad-clip and use a new --out")
                        sums += [sum(float(m["loss"]) for m in got),
                                 sum(float(m["acc"]) for m in got)]
                        step = epoch * steps_per_epoch + i + 1
                        log.write([{"kind": "train", "step": step, "epoch": epoch + 1,
                                    "loss": loss, "acc": acc, "lr": float(got[-1]["lr"]),
                                    "grad_norm": float(got[-1]["grad_norm"])}])
                        rate = (i + 1) * batch / max(time.time() - t_epoch, 1e-9)
                        bar.update(advance=i + 1 - shown, rate=f"{rate:,.0f} img/s",
                                   epoch=f"{epoch + 1}/{cfg.epochs}", loss=loss, acc=acc)
                        shown = i + 1
                jax.block_until_ready(state)
                seconds = time.time() - t_epoch
                val = evaluate_val(state)
                row = {"kind": "epoch", "step": int(state.step), "epoch": epoch + 1,
                       "train_loss": sums[0] / steps_per_epoch,
                       "train_acc": sums[1] / steps_per_epoch, "val_acc": val,
                       "epoch_seconds": round(seconds, 3),
                       "images_per_second": round(steps_per_epoch * batch / seconds, 1)}
                log.write([row])
                bar.update(advance=0, epoch=f"{epoch + 1}/{cfg.epochs}", loss=row["train_loss"],
                           acc=row["train_acc"], val=val)
                if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
                    ckpt.save(int(state.step), state)
    except KeyboardInterrupt:
        ckpt.close()
        rep.info(f"interrupted in epoch {epoch + 1}; the same command resumes from the last "
                 "saved epoch")
        raise

    ckpt.close()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    export_model(run_dir / MODEL_FILE, variables)
    test = accuracy(variables, data.test.images, data.test.labels)
    epochs_log = [r for r in log.read() if r.get("kind") == "epoch"]
    best = max(epochs_log, key=lambda r: r["val_acc"])
    rates = [r["images_per_second"] for r in epochs_log]
    summary = {
        "run_dir": str(run_dir), "arch": cfg.arch, "space": cfg.space, "origin": origin,
        "dataset": cfg.dataset, "channels": cfg.channels, "cells": cfg.cells,
        "epochs": cfg.epochs, "steps": int(state.step),
        "params": params,
        "flops": count_flops(plain, shape),  # forward, per image
        "best_val_acc": best["val_acc"], "best_epoch": best["epoch"],
        "final_val_acc": epochs_log[-1]["val_acc"], "test_acc": test,
        "train_seconds": round(sum(r["epoch_seconds"] for r in epochs_log), 1),
        # the first epoch includes compilation; the median is the steady rate
        "images_per_second": round(float(np.median(rates[1:] if len(rates) > 1 else rates)), 1),
        "wall_seconds": round(time.time() - t_invocation, 1),
        "model": str(run_dir / MODEL_FILE), "data_source": data.source,
    }
    write_json(run_dir / "summary.json", summary)
    plots.curves({"train": ([r["epoch"] for r in epochs_log], [r["train_acc"] for r in epochs_log]),
                  "validation": ([r["epoch"] for r in epochs_log],
                                 [r["val_acc"] for r in epochs_log])},
                 run_dir / "learning_curve.png", "epoch", "accuracy",
                 title=f"{cfg.space} on {cfg.dataset}: test {test:.4f}")
    rep.summary("retrain summary", {k: summary[k] for k in (
        "arch", "params", "flops", "best_val_acc", "final_val_acc", "test_acc",
        "images_per_second", "train_seconds", "run_dir")})
    return summary


def evaluate_runs(out: str | Path, data_dir: str | None = None, dataset: str | None = None,
                  reporter: Reporter | None = None) -> dict[str, Any]:
    """`gtn-nas retrain --eval-only`: reloads the exported model (or the latest checkpoint) of a
    run, or of every ``NN/`` run of a ``--top`` directory, and measures validation and test
    accuracy; writes ``eval.json`` beside each."""
    rep = reporter or Reporter(quiet=True)
    out = Path(out)
    if (out / "config.json").is_file():
        dirs = [out]
    elif out.is_dir():
        dirs = sorted(d for d in out.iterdir() if (d / "config.json").is_file())
    else:
        dirs = []
    if not dirs:
        raise CheckpointError(f"{out} holds no retrain run (no config.json); pass the --out "
                              "directory of a `gtn-nas retrain`")
    results = []
    for d in dirs:
        cfg = load_config(RetrainConfig, d / "config.json")
        name = dataset or cfg.dataset
        trained = IMAGE_SHAPES[cfg.dataset]
        data = load_dataset(name, data_dir or cfg.data_dir, cfg.split_seed)
        if tuple(data.image_shape) != tuple(trained):
            raise DataError(f"the model in {d} was trained on {cfg.dataset} images of shape "
                            f"{trained}; {name} images have shape {data.image_shape}")
        cfg, model, variables, source = load_model(d, data.image_shape)
        accuracy = make_accuracy(model, data.mean, data.std,
                                 eval_chunk(cfg, len(data.validation), len(data.test)))
        row = {"run_dir": str(d), "arch": cfg.arch, "space": cfg.space, "dataset": name,
               "loaded": source,
               "val_acc": accuracy(variables, data.validation.images, data.validation.labels),
               "test_acc": accuracy(variables, data.test.images, data.test.labels)}
        save_result(d / "eval.json", row)
        results.append(row)
    rep.table("retrained models, evaluated", results,
              ["run_dir", "loaded", "val_acc", "test_acc"])
    return results[0] if len(results) == 1 and dirs[0] == out else {"runs": results}


__all__ = ["ArchitectureError", "evaluate_runs", "for_spec", "load_model", "retrain",
           "retrain_one"]
