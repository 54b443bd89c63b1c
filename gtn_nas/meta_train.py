"""Meta-training: the exact second-order meta-gradient and the outer optimiser.

meta_loss(φ) = mean over fresh learners of [ NLL(θ_T(φ); real batch) + w · Σ_k NLL(θ_{kU}(φ); real batch_k) ]
where θ_t(φ) is a learner unrolled t steps on the teacher's synthetic batches (``unroll``). The
gradient with respect to φ (generator, curriculum, log_lr, log_mom) goes back through every inner
update. The outer optimiser is Adam with a cosine decay to ``final_relative_lr``·lr and optional
global-norm clipping. A step is skipped, not applied, when its loss, meta-gradient or result is
not finite, or when its meta-gradient norm is a spike (above ``spike_factor`` times the running
mean of accepted norms): near the edge of stability of the unrolled loop the meta-gradient is
chaotic and huge, and one Adam step along it can wreck the generator (benchmarks/RESULTS.md,
Robustness). The host loop adds the last guard: when a fresh learner's validation accuracy falls
``rollback_drop`` below the best seen, the run goes back to the best state with half the meta-lr.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gtn_nas.config import MetaTrainConfig
from gtn_nas.distributed import shard_learners
from gtn_nas.learners import Learner
from gtn_nas.teacher import MetaParams, Teacher
from gtn_nas.training import real_batches
from gtn_nas.unroll import accuracy, init_inner_state, nll, num_intermediate, unroll


class MetaState(NamedTuple):
    step: jax.Array  # int32 scalar: outer steps attempted so far
    meta_params: MetaParams
    opt_state: Any
    grad_ema: jax.Array  # float32 scalar: running mean of accepted meta-gradient norms (0: none yet)
    lr_scale: jax.Array  # float32 scalar: meta-lr multiplier, halved by each rollback

SPIKE_WARMUP = 10  # outer steps before the spike test starts (the running mean settles)
SPIKE_EMA = 0.9  # decay of the running mean of meta-gradient norms
SPIKE_GROWTH = 1.05  # a rejected spike raises the mean, so a lasting change of scale gets through


@dataclass(frozen=True)
class LearnerSource:
    """Where each outer step's learner comes from.

    ``build(arch)`` returns the Learner for an architecture encoding (None for a fixed learner),
    called inside the jitted meta-step, so an array ``arch`` lets every architecture share one
    compiled program; ``sample(key)`` draws the encoding for a step.
    """

    name: str
    build: Callable[[Any], Learner]
    sample: Callable[[jax.Array], Any] = lambda key: None


def fixed_source(learner: Learner) -> LearnerSource:
    return LearnerSource(learner.name, lambda arch: learner)


def make_optimizer(cfg: MetaTrainConfig) -> optax.GradientTransformation:
    schedule = optax.cosine_decay_schedule(cfg.meta_lr, cfg.iterations, alpha=cfg.final_relative_lr)
    adam = optax.adam(schedule, b1=cfg.meta_b1, b2=cfg.meta_b2, eps=cfg.meta_eps)
    if cfg.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adam)
    return adam


def init_meta_state(cfg: MetaTrainConfig, teacher: Teacher, key: jax.Array) -> MetaState:
    # Strong dtypes: a weakly typed init leaf would make the second step retrace and recompile.
    meta = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=x.dtype), jax.jit(teacher.init)(key))
    return MetaState(jnp.zeros((), jnp.int32), meta, make_optimizer(cfg).init(meta),
                     jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32))


def all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def make_meta_loss(cfg: MetaTrainConfig, teacher: Teacher, source: LearnerSource, mean, std,
                   augment=None, mesh=None, scan_unroll: int | bool = 1):
    """Returns meta_loss(meta_params, arch, key, train_images, train_labels) -> (loss, metrics).

    With a ``mesh`` the fresh learners are split over its devices (``distributed.learner_mesh``);
    the mean over them is then XLA's all-reduce, and the result equals the one-device program's.
    ``scan_unroll``: the inner loop's ``lax.scan`` unroll (True for a fully unrolled lowering,
    which FLOP counting needs: XLA's cost analysis counts a loop body once).
    """
    n_inter = num_intermediate(cfg.inner_steps, cfg.intermediate_every)

    def meta_loss(meta, arch, key, images, labels):
        learner = source.build(arch)
        k_teach, k_learners = jax.random.split(key)
        xs, ys = teacher.generate(meta, k_teach)  # [T, B, H, W, C], [T, B, classes]
        lrs, moms = teacher.schedule(meta)

        def one_learner(k):
            k_init, k_real = jax.random.split(k)
            real_x, real_y = real_batches(k_real, images, labels, n_inter + 1, cfg.meta_batch_size,
                                          mean, std, augment)  # [n+1, Bm, H, W, C]
            state = init_inner_state(learner, k_init)
            final, inner_losses, inter = unroll(
                learner, state, xs, ys, lrs, moms, remat=cfg.remat,
                real_xs=real_x[:-1], real_ys=real_y[:-1], every=cfg.intermediate_every,
                scan_unroll=scan_unroll)
            logits, _ = learner.apply(final.params, final.stats, real_x[-1], False)
            final_loss = nll(logits, real_y[-1])
            total = final_loss + cfg.intermediate_weight * inter
            return total, (final_loss, accuracy(logits, real_y[-1]), inner_losses[-1])

        keys = shard_learners(jax.random.split(k_learners, cfg.num_learners), mesh)
        if cfg.num_learners == 1 and mesh is None:
            # Called directly: a vmap of one turns every matmul into a batched dot, which XLA's
            # CPU backend runs ~15% slower over the whole meta-step (benchmarks/RESULTS.md, Speed).
            totals, (finals, accs, inner_last) = jax.tree_util.tree_map(
                lambda a: a[None], one_learner(keys[0]))
        else:
            totals, (finals, accs, inner_last) = jax.vmap(one_learner)(keys)
        metrics = {"meta_loss": jnp.mean(totals), "final_loss": jnp.mean(finals),
                   "train_acc": jnp.mean(accs), "inner_loss": jnp.mean(inner_last)}
        return jnp.mean(totals), metrics

    return meta_loss


def make_meta_step(cfg: MetaTrainConfig, teacher: Teacher, source: LearnerSource, mean, std,
                   augment=None, mesh=None, scan_unroll: int | bool = 1):
    """The whole outer step as one function: meta-gradient, finiteness check, optax update.

    meta_step(meta_state, arch, key, train_images, train_labels) -> (meta_state, metrics)
    """
    meta_loss = make_meta_loss(cfg, teacher, source, mean, std, augment, mesh, scan_unroll)
    opt = make_optimizer(cfg)

    def meta_step(ms: MetaState, arch, key, images, labels):
        (loss, metrics), grads = jax.value_and_grad(meta_loss, has_aux=True)(
            ms.meta_params, arch, key, images, labels)
        norm = optax.tree.norm(grads)
        updates, new_opt = opt.update(grads, ms.opt_state, ms.meta_params)
        updates = jax.tree_util.tree_map(lambda u: ms.lr_scale * u, updates)
        new_meta = optax.apply_updates(ms.meta_params, updates)
        finite = (jnp.isfinite(loss) & all_finite(grads) & all_finite(new_meta)
                  & all_finite(new_opt))
        settled = ms.step >= SPIKE_WARMUP
        spike = (finite & settled & (cfg.spike_factor > 0)
                 & (norm > cfg.spike_factor * ms.grad_ema))
        accept = finite & ~spike
        keep = lambda new, old: jnp.where(accept, new, old)  # noqa: E731 - skip a rejected step
        new_meta = jax.tree_util.tree_map(keep, new_meta, ms.meta_params)
        new_opt = jax.tree_util.tree_map(keep, new_opt, ms.opt_state)
        ema = jnp.where(ms.grad_ema > 0, SPIKE_EMA * ms.grad_ema + (1 - SPIKE_EMA) * norm, norm)
        ema = jnp.where(accept, ema, jnp.where(spike, SPIKE_GROWTH * ms.grad_ema, ms.grad_ema))
        lrs, moms = teacher.schedule(ms.meta_params)
        metrics = dict(metrics, grad_norm=norm, finite=finite, spike=spike,
                       lr_mean=jnp.mean(lrs), mom_mean=jnp.mean(moms), lr_max=jnp.max(lrs),
                       mom_max=jnp.max(moms), **{f"grad_norm_{k}": optax.tree.norm(v)
                                                 for k, v in grads.items()})
        return MetaState(ms.step + 1, new_meta, new_opt, ema.astype(jnp.float32),
                         ms.lr_scale), metrics

    return meta_step


# ---------------------------------------------------------------------------------------------
# The command: run directory, outer loop, checkpoints, periodic validation, samples, summary.

import functools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from gtn_nas import plots  # noqa: E402
from gtn_nas.checkpoint import Checkpointer  # noqa: E402
from gtn_nas.errors import GtnError, NonFiniteError  # noqa: E402
from gtn_nas.generator import make_generator  # noqa: E402
from gtn_nas.runs import MetricsLog, NullLog, open_run_dir, write_json  # noqa: E402
from gtn_nas.training import score, subset, train_on_teacher  # noqa: E402
from gtn_nas.ui import Reporter  # noqa: E402


def build_teacher(cfg: MetaTrainConfig, image_shape, num_classes: int) -> Teacher:
    gen = make_generator(cfg.generator, image_shape, cfg.generator_hidden)
    return Teacher(gen, cfg.curriculum, cfg.inner_steps, cfg.batch_size, cfg.noise_dim,
                   num_classes, cfg.learn_labels, cfg.init_lr, cfg.init_momentum, cfg.lr_max,
                   cfg.momentum_max)


def build_learner_source(cfg: MetaTrainConfig, image_shape, num_classes: int) -> LearnerSource:
    """The meta-training learner: a fixed architecture, or a search space sampled every step."""
    from gtn_nas.learners import FIXED_LEARNERS, make_learner

    if cfg.learner in FIXED_LEARNERS:
        return fixed_source(make_learner(cfg.learner, image_shape, num_classes, cfg.learner_width))
    from gtn_nas.nas_learners import space_source  # search spaces stay out of the core trainer

    return space_source(cfg, image_shape, num_classes)


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


def curriculum_images(teacher: Teacher, meta: MetaParams, key) -> tuple[np.ndarray, np.ndarray]:
    x, y = jax.jit(teacher.generate)(meta, key)
    return np.asarray(x), np.asarray(jnp.argmax(y, -1))


def meta_train(cfg: MetaTrainConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Runs (or resumes) `gtn-nas meta-train`; returns the summary also saved as summary.json."""
    from gtn_nas.data import augment_crop_flip, load_dataset

    from gtn_nas import distributed as dist

    dist.initialize(cfg.coordinator, cfg.num_processes, cfg.process_id)
    main = dist.is_main()  # only process 0 writes logs, pictures and the summary
    rep = reporter if (reporter is not None and main) else Reporter(quiet=True)
    mesh = dist.learner_mesh(cfg.devices, cfg.num_learners)
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.split_seed)
    _warn_schedule_change(cfg, rep)
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
    augment = augment_crop_flip if cfg.augment else None
    step_fn = jax.jit(make_meta_step(cfg, teacher, source, data.mean, data.std, augment, mesh),
                      donate_argnums=0)
    put = functools.partial(dist.replicate, mesh=mesh)  # identity without a mesh
    k_arch = jax.random.fold_in(k_steps, 2**31 - 1)
    k_eval_arch = jax.random.fold_in(k_eval, 2**31 - 1)

    validate = make_validator(teacher, source, data.mean, data.std)

    def validation_accuracy(step: int) -> float:
        key = jax.random.fold_in(k_eval, step)
        arch = source.sample(jax.random.fold_in(k_eval_arch, step))
        return float(dist.to_host(validate(state.meta_params, put(key), put(arch), v_img, v_lab)))

    pending: list[tuple[int, dict]] = []
    nonfinite_run = 0
    spikes = sum(bool(r.get("spike")) for r in log.read())
    t_start = time.time()
    last_val: float | None = None
    step = shown = start

    def flush() -> None:
        nonlocal nonfinite_run, spikes
        rows = []
        for s, m in pending:
            m = jax.tree_util.tree_map(dist.to_host, m)
            row = {"step": int(s) + 1, **{k: float(v) for k, v in m.items()}}
            row["finite"], row["spike"] = bool(m["finite"]), bool(m["spike"])
            nonfinite_run = 0 if row["finite"] else nonfinite_run + 1
            spikes += row["spike"]
            rows.append(row)
        pending.clear()
        log.write(rows)
        if nonfinite_run >= cfg.max_nonfinite:
            ckpt.save(step, state)  # finite: a non-finite step never replaces the state
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
    try:
        with rep.progress("meta-train", total=cfg.iterations, completed=start) as bar:
            while step < cfg.iterations:
                key = jax.random.fold_in(k_steps, step)
                arch = source.sample(jax.random.fold_in(k_arch, step))
                state, metrics = step_fn(state, put(arch), put(key), images, labels)
                pending.append((step, metrics))
                step += 1
                done = step == cfg.iterations
                if step % cfg.log_every == 0 or done:
                    loss = float(dist.to_host(metrics["meta_loss"]))
                    flush()
                    if cfg.eval_every and (step % cfg.eval_every == 0 or done):
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

    done_before = [r["val_acc"] for r in log.read() if r["step"] == step and "val_acc" in r]
    if done_before:  # a finished run run again: its reading stands, no second row
        last_val = done_before[-1]
    elif last_val is None or cfg.eval_every == 0:
        last_val = validation_accuracy(step)
        log.write([{"step": step, "val_acc": last_val}])
        if best.val is None or last_val > best.val:
            best.save(step, state, last_val)
    save_samples("final")
    rows = log.read()
    wall = time.time() - t_start  # this invocation's time; a resumed run counts only its part
    train_rows = [r for r in rows if "meta_loss" in r]
    lrs, moms = jax.tree_util.tree_map(dist.to_host, teacher.schedule(state.meta_params))
    summary = {
        "run_dir": str(run_dir), "dataset": cfg.dataset, "learner": source.name,
        "outer_steps": step, "final_meta_loss": train_rows[-1]["meta_loss"] if train_rows else None,
        "validation_accuracy": last_val, "nonfinite_steps": sum(not r["finite"] for r in train_rows),
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
    from gtn_nas.config import load_config

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
            meta = json.loads(info.read_text())
            self.step, self.val = int(meta["step"]), float(meta["val_acc"])

    def save(self, step: int, state: MetaState, val: float) -> None:
        from gtn_nas.distributed import to_host

        self.step, self.val = step, val
        self._host = jax.tree_util.tree_map(lambda x: np.array(to_host(x)), state)
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
        from gtn_nas.distributed import to_host

        return int(round(-math.log2(float(to_host(state.lr_scale)))))

    def close(self) -> None:
        self._ckpt.close()


def load_gtn(run_dir: str | Path, which: str = "best"
             ) -> tuple[MetaTrainConfig, Teacher, MetaParams, int]:
    """Reads a meta-training run: (config, teacher, meta_params, their outer step).

    ``which``: ``best`` (the best-validation meta-parameters; the last ones for a run that has
    no best yet) or ``last``. Non-finite parameters are refused: they can only teach noise.
    """
    from gtn_nas.config import GTN_CHECKPOINTS, load_config
    from gtn_nas.data.base import IMAGE_SHAPES, NUM_CLASSES
    from gtn_nas.errors import CheckpointError, ConfigError

    if which not in GTN_CHECKPOINTS:
        raise ConfigError(f"checkpoint must be one of {', '.join(GTN_CHECKPOINTS)}, got {which!r}")
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise CheckpointError(f"{run_dir} is not a meta-training run (no config.json); "
                              "pass the --out directory of `gtn-nas meta-train`")
    try:
        kind = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        kind = {}  # load_config says what is wrong with it
    if isinstance(kind, dict) and kind and "inner_steps" not in kind:
        what = "search" if "proxies" in kind else "retrain" if "epochs" in kind else "other"
        raise CheckpointError(f"{run_dir} is not a meta-training run (its config.json is a "
                              f"{what} run's); pass the --out directory of `gtn-nas meta-train`")
    cfg = load_config(MetaTrainConfig, run_dir / "config.json")  # validated: a known dataset
    teacher = build_teacher(cfg, IMAGE_SHAPES[cfg.dataset], NUM_CLASSES[cfg.dataset])
    folder = run_dir / "checkpoints"
    if which == "best" and (run_dir / "best" / "best.json").exists():
        folder = run_dir / "best"
    ckpt = Checkpointer(folder)
    latest = ckpt.latest_step()
    if latest is None:
        raise CheckpointError(f"{run_dir} has no checkpoint yet; run `gtn-nas meta-train --out {run_dir}` first")
    state = ckpt.restore(latest, init_meta_state(cfg, teacher, jax.random.PRNGKey(0)))
    ckpt.close()
    meta = jax.tree_util.tree_map(jnp.asarray, state.meta_params)
    bad = sum(int(np.sum(~np.isfinite(np.asarray(x)))) for x in jax.tree_util.tree_leaves(meta))
    if bad:
        raise CheckpointError(f"the meta-parameters in {folder / str(latest)} hold {bad} non-finite "
                              "values; meta-train again with a lower --meta-lr")
    return cfg, teacher, meta, latest
