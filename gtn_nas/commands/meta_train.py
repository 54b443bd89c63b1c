"""`gtn-nas meta-train`: the command driver around the pure trainer (``gtn_nas.meta``).

It owns what the trainer does not: the run directory, data loading, the host loop over outer
steps, checkpoints, periodic validation, curriculum pictures and the summary. The last of the
guards lives here too, because it needs the host: when a fresh learner's validation accuracy falls
``rollback_drop`` below the best seen, the run goes back to the best state with half the meta-lr.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gtn_nas.config import MetaTrainConfig, load_config
from gtn_nas.core import distributed as dist
from gtn_nas.core.images import crop_flip
from gtn_nas.core.learners import FIXED_LEARNERS, LearnerSource
from gtn_nas.core.teacher import Teacher
from gtn_nas.core.training import score, train_on_teacher
from gtn_nas.errors import GtnError, NonFiniteError
from gtn_nas.io import plots, signals
from gtn_nas.io.checkpoint import Checkpointer
from gtn_nas.io.data import load_dataset, subset
from gtn_nas.io.hostmem import one_call_at_a_time, release_freed_memory
from gtn_nas.io.runs import (MetricsLog, NullLog, check_writable, open_run_dir, read_json,
                             run_lock, write_json)
from gtn_nas.io.ui import Reporter
from gtn_nas.meta import exact_meta_step
from gtn_nas.meta.gtn import BEST_SCHEMA, build_learner_source, build_teacher, curriculum_images
from gtn_nas.meta.outer import MetaState, init_meta_state

def _keys(seed: int):
    """One root key split once by purpose: teacher init, outer steps, validation learners."""
    k_init, k_steps, k_eval = jax.random.split(jax.random.PRNGKey(seed), 3)
    return k_init, k_steps, k_eval


def make_validator(teacher: Teacher, source: LearnerSource, mean, std):
    """validate(meta, key, arch, images, labels): a fresh learner trained on the curriculum,
    scored on the images. The split is an argument: closed over, it would be baked into the
    program as a constant (138 MB for CIFAR-10's validation set)."""
    @jax.jit
    def validate(meta, key, arch, images, labels):
        learner = source.build(arch)
        st = train_on_teacher(teacher, learner, meta, key)
        return score(learner, st, images, labels, mean, std)

    return validate


def meta_train(cfg: MetaTrainConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Runs (or resumes) `gtn-nas meta-train`; returns the summary also saved as summary.json."""
    one_call_at_a_time()  # before JAX's CPU client exists (a no-op once it does)
    dist.initialize(cfg.coordinator, cfg.num_processes, cfg.process_id)
    main = dist.is_main()  # only process 0 writes logs, pictures and the summary
    rep = reporter if (reporter is not None and main) else Reporter(quiet=True)
    mesh = dist.learner_mesh(cfg.devices, cfg.num_learners)
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.split_seed)
    _warn_schedule_change(cfg, rep)
    if main:
        check_writable(cfg.out)
    with run_lock(cfg.out, "meta-train", enabled=main):
        return _meta_train(cfg, rep, main, mesh, data)


def _meta_train(cfg: MetaTrainConfig, rep: Reporter, main: bool, mesh, data) -> dict[str, Any]:
    if main:
        run_dir, resumed = open_run_dir(cfg, cfg.out)
    else:
        run_dir = Path(cfg.out)
    image_shape, classes = data.image_shape, data.num_classes
    teacher = build_teacher(cfg, image_shape, classes)
    source = build_learner_source(cfg, image_shape, classes)
    k_init, k_steps, k_eval = _keys(cfg.seed)

    ckpt = Checkpointer(run_dir / "checkpoints", writer=main)
    best = BestKeeper(run_dir / "best", writer=main)
    state = init_meta_state(cfg, teacher, k_init)
    start = 0
    latest = ckpt.latest_step()
    if latest is not None:
        state = ckpt.restore(latest, state)
        state = jax.tree_util.tree_map(jnp.asarray, state)
        start = int(state.step)
        best.load()
        rep.info(f"resuming {run_dir} from outer step {start}")
    dist.check_same_everywhere(start, "the outer step to resume from")
    if mesh is not None:
        state = dist.replicate(state, mesh)
        rep.info(f"{cfg.num_learners} learners per outer step over {mesh.size} devices "
                 f"({jax.process_count()} process(es), {jax.default_backend()})")
    # Rows are numbered by steps completed: the restored step's own row is already done.
    log = MetricsLog(run_dir / "metrics.jsonl", resume_step=start + 1) if main else NullLog()

    images, labels = dist.replicate((jnp.asarray(data.train.images),
                                     jnp.asarray(data.train.labels)), mesh)
    v_img, v_lab = subset(data.validation.images, data.validation.labels, cfg.eval_subset)
    v_img, v_lab = dist.replicate((jnp.asarray(v_img), jnp.asarray(v_lab)), mesh)
    augment = crop_flip if cfg.augment else None
    step_fn = jax.jit(exact_meta_step(cfg, teacher, source, data.mean, data.std, augment, mesh),
                      donate_argnums=0)
    put = functools.partial(dist.replicate, mesh=mesh)  # identity without a mesh
    if cfg.learner in FIXED_LEARNERS:
        # One program serves every step: compiled ahead, so that the compiler's transient
        # (~0.5 GB on CPU) is back with the kernel before the first step's temporaries are
        # allocated, not resident beside them for the whole run.
        step_fn = step_fn.lower(state, put(None), put(k_steps), images, labels).compile()
        release_freed_memory()
    k_arch = jax.random.fold_in(k_steps, 2**31 - 1)
    k_eval_arch = jax.random.fold_in(k_eval, 2**31 - 1)

    validate = make_validator(teacher, source, data.mean, data.std)

    def validation_accuracy(step: int) -> float:
        key = jax.random.fold_in(k_eval, step)
        arch = source.sample(jax.random.fold_in(k_eval_arch, step))
        return float(dist.to_host(validate(state.meta_params, put(key), put(arch), v_img, v_lab)))

    pending: list[tuple[int, dict]] = []
    earlier = [r for r in log.read() if "meta_loss" in r]
    nonfinite_run = 0  # a resumed run (say, with a lower --meta-lr) gets the guard's full count
    finite_seen = any(r.get("finite") for r in earlier)
    spikes = sum(bool(r.get("spike")) for r in earlier)
    t_start = time.time()
    last_val: float | None = None
    step = shown = start

    def flush() -> None:
        nonlocal nonfinite_run, spikes, finite_seen
        rows = []
        for s, m in pending:
            m = jax.tree_util.tree_map(dist.to_host, m)
            row = {"step": int(s) + 1, **{k: float(v) for k, v in m.items()}}
            row["finite"], row["spike"] = bool(m["finite"]), bool(m["spike"])
            nonfinite_run = 0 if row["finite"] else nonfinite_run + 1
            finite_seen = finite_seen or row["finite"]
            spikes += row["spike"]
            rows.append(row)
        pending.clear()
        log.write(rows)
        if nonfinite_run >= cfg.max_nonfinite:
            ckpt.save(step, state)  # finite: a non-finite step never replaces the state
            if not finite_seen:  # the starting point diverges: no meta-lr can fix that
                raise NonFiniteError(
                    f"every outer step up to {step} was non-finite: fresh learners diverge on the "
                    f"initial curriculum, before any meta-update; start from a smaller inner "
                    f"--init-lr (now {cfg.init_lr:g}) or --init-momentum (now "
                    f"{cfg.init_momentum:g}), with a new --out directory")
            raise NonFiniteError(
                f"{nonfinite_run} consecutive non-finite meta-gradients at outer step {step}; the "
                f"last finite meta-parameters are saved in {run_dir / 'checkpoints'}; run the same "
                "command again with a lower --meta-lr (or a --grad-clip) to resume from them")

    def check_validation() -> None:
        """Keeps the best-validation state; rolls back to it when validation collapses."""
        nonlocal state
        if best.val is None or last_val > best.val:
            best.save(step, state, last_val)
        elif cfg.rollback_drop and last_val < best.val - cfg.rollback_drop:
            good = best.restore(state)
            scale = float(dist.to_host(state.lr_scale)) * 0.5
            state = put(good._replace(step=state.step, lr_scale=jnp.asarray(scale, jnp.float32)))
            log.write([{"step": step, "rollback_to": best.step, "lr_scale": scale}])
            rep.warn(f"validation fell to {100 * last_val:.1f}% at outer step {step} (best "
                     f"{100 * best.val:.1f}% at {best.step}): back to step {best.step}'s "
                     f"meta-parameters, meta-lr x{scale:g}")
        elif last_val < best.val - DROP_REPORTED:
            rep.warn(f"validation fell to {100 * last_val:.1f}% at outer step {step}, "
                     f"{100 * (best.val - last_val):.1f} points below the best "
                     f"({100 * best.val:.1f}% at {best.step})")

    def save_samples(tag: str) -> None:
        if not main:
            return
        meta = jax.tree_util.tree_map(dist.to_host, state.meta_params)  # this process only
        x, y = curriculum_images(teacher, meta, jax.random.fold_in(k_eval, 7))
        plots.curriculum_grid(x, y, run_dir / "samples" / f"curriculum_{tag}.png", data.mean,
                              data.std, title=f"{cfg.dataset} GTN curriculum, outer step {tag}")

    interrupted = False
    stopped = None  # why the run ended before cfg.iterations (None: it did not)
    mark = signals.received()
    try:
        with rep.progress("meta-train", total=cfg.iterations, completed=start) as bar:
            while step < cfg.iterations:
                signals.raise_if_received_since(mark)  # one that a gc callback swallowed
                key = jax.random.fold_in(k_steps, step)
                arch = source.sample(jax.random.fold_in(k_arch, step))
                # `state` is donated: a Ctrl-C before it is replaced would lose it
                with signals.deferred_interrupts():
                    state, metrics = step_fn(state, put(arch), put(key), images, labels)
                pending.append((step, metrics))
                step += 1
                # Every process must stop at the same step: with several, the clocks are compared
                # (a collective) only at log rows, where all of them stop anyway.
                out_of_time = (cfg.time_budget is not None and step < cfg.iterations
                               and (jax.process_count() == 1 or step % cfg.log_every == 0)
                               and dist.any_everywhere(time.time() - t_start >= cfg.time_budget))
                finished = step == cfg.iterations
                done = finished or out_of_time
                # Validation follows --eval-every alone, and not at a --time-budget stop: a
                # reading there (and the rollback it may trigger) would make a stopped and
                # resumed run differ from an uninterrupted one.
                due = bool(cfg.eval_every) and (step % cfg.eval_every == 0 or finished)
                if step % cfg.log_every == 0 or done or due:
                    loss = float(dist.to_host(metrics["meta_loss"]))
                    flush()
                    if due:  # reading, its row and the best state it may set: all or none
                        with signals.deferred_interrupts():
                            last_val = validation_accuracy(step)
                            log.write([{"step": step, "val_acc": last_val}])
                            check_validation()
                    elapsed = time.time() - t_start
                    rate = (step - start) / max(elapsed, 1e-9)
                    fields = {"loss": loss}
                    if last_val is not None:
                        fields["val_acc"] = last_val
                        fields["best"] = best.val
                    if spikes:
                        fields["spikes"] = spikes
                    if best.rollbacks(state):
                        fields["rollbacks"] = best.rollbacks(state)
                    bar.update(advance=step - shown, rate=f"{rate:.2f} it/s", **fields)
                    shown = step
                if step % cfg.checkpoint_every == 0 or done:
                    if pending:  # rows up to a checkpoint are on disk before it: no gap on a kill
                        flush()
                    ckpt.save(step, state)
                if cfg.samples_every and step % cfg.samples_every == 0:
                    save_samples(f"{step:06d}")
                if out_of_time:
                    stopped = "time_budget"
                    rep.info(f"time budget of {cfg.time_budget:g} s reached at outer step {step} "
                             f"of {cfg.iterations}; run the same command again to continue")
                    break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if pending:
            try:
                flush()
            except NonFiniteError:
                pass
        ckpt.save(step, state)  # on exit, Ctrl-C included: nothing is lost
    if interrupted:
        rep.info(f"interrupted at outer step {step}; run the same command again to resume")
        raise KeyboardInterrupt

    readings = [r for r in log.read() if "val_acc" in r]
    if stopped is not None:  # the last reading so far; the run goes on where it stopped
        last_val = readings[-1]["val_acc"] if readings else None
    elif readings and readings[-1]["step"] == step:  # a finished run run again: it stands
        last_val = readings[-1]["val_acc"]
    elif last_val is None or cfg.eval_every == 0:
        last_val = validation_accuracy(step)
        log.write([{"step": step, "val_acc": last_val}])
        if best.val is None or last_val > best.val:
            best.save(step, state, last_val)
    save_samples("final" if stopped is None else f"{step:06d}")
    rows = log.read()
    wall = time.time() - t_start  # this invocation's time; a resumed run counts only its part
    train_rows = [r for r in rows if "meta_loss" in r]
    lrs, moms = jax.tree_util.tree_map(dist.to_host, teacher.schedule(state.meta_params))
    summary = {
        "run_dir": str(run_dir), "dataset": cfg.dataset, "learner": source.name,
        "outer_steps": step, "iterations": cfg.iterations, "stopped": stopped,
        "final_meta_loss": train_rows[-1]["meta_loss"] if train_rows else None,
        "validation_accuracy": last_val,
        "validation_step": next((r["step"] for r in reversed(rows) if "val_acc" in r), None),
        "nonfinite_steps": sum(not r["finite"] for r in train_rows),
        "best_step": best.step, "best_validation_accuracy": best.val,
        "meta_gradient_spikes": sum(bool(r.get("spike")) for r in train_rows),
        "spike_steps": [r["step"] for r in train_rows if r.get("spike")][:100],
        "rollbacks": [{"step": r["step"], "to": r["rollback_to"], "lr_scale": r["lr_scale"]}
                      for r in rows if "rollback_to" in r],
        "validation_drops": validation_drops(rows),
        "wall_seconds": round(wall, 1), "data_source": data.source,
        "inner_lr": np.asarray(lrs).round(5).tolist(),
        "inner_momentum": np.asarray(moms).round(4).tolist(),
        "runtime": dist.describe() | {"mesh_devices": mesh.size if mesh is not None else 1},
    }
    if main:
        write_json(run_dir / "summary.json", summary)
    ckpt.close()
    best.close()
    return summary


def _warn_schedule_change(cfg: MetaTrainConfig, rep: Reporter) -> None:
    """The meta-lr's cosine decay spans ``iterations``: resuming with another count reshapes it."""
    path = Path(cfg.out) / "config.json"
    if not (path.exists() and (Path(cfg.out) / "checkpoints").is_dir()):
        return
    try:
        old = load_config(MetaTrainConfig, path)
    except GtnError:
        return  # open_run_dir reports it
    if old.iterations != cfg.iterations:
        rep.warn(f"resuming with --iterations {cfg.iterations} (was {old.iterations}): the "
                 f"meta-lr's cosine decay now spans {cfg.iterations} steps, so the rest of this "
                 f"run follows another schedule than a straight {cfg.iterations}-step run")


DROP_REPORTED = 0.02  # validation falls of at least this much below the best so far are listed


def validation_drops(rows: list[dict]) -> list[dict]:
    """Each validation reading that fell DROP_REPORTED or more below the best reading before it."""
    drops, top = [], None
    for r in rows:
        if "val_acc" not in r:
            continue
        v = r["val_acc"]
        if top is not None and v < top - DROP_REPORTED:
            drops.append({"step": r["step"], "val_acc": v, "best_before": top})
        top = v if top is None else max(top, v)
    return drops


class BestKeeper:
    """The best-validation meta-state: a one-step checkpoint folder beside ``checkpoints/`` and
    ``best.json`` (step, accuracy), plus a host copy for rollbacks within this invocation."""

    def __init__(self, directory: Path, writer: bool = True):
        self.directory, self.writer = Path(directory), writer
        self._ckpt = Checkpointer(self.directory, max_to_keep=1, writer=writer)
        self.step: int | None = None
        self.val: float | None = None
        self._host = None

    def load(self) -> None:
        """On resume: the best reading so far (the state itself is read when first needed)."""
        info = self.directory / "best.json"
        if info.exists() and self._ckpt.latest_step() is not None:
            meta = read_json(info, BEST_SCHEMA)
            self.step, self.val = int(meta["step"]), float(meta["val_acc"])

    def save(self, step: int, state: MetaState, val: float) -> None:
        self.step, self.val = step, val
        self._host = jax.tree_util.tree_map(lambda x: np.array(dist.to_host(x)), state)
        if self.writer:
            self._ckpt.save(step, self._host)
            write_json(self.directory / "best.json", {"step": step, "val_acc": val})

    def restore(self, like: MetaState) -> MetaState:
        if self._host is None:
            self._host = self._ckpt.restore(self.step, like)
        return jax.tree_util.tree_map(jnp.asarray, self._host)

    @staticmethod
    def rollbacks(state: MetaState) -> int:
        """Rollbacks so far, read off the meta-lr scale (each halves it)."""
        return int(round(-math.log2(float(dist.to_host(state.lr_scale)))))

    def close(self) -> None:
        self._ckpt.close()
