"""A GTN as its config describes it (teacher and learner source), and as a run directory holds it.

The trainer never imports ``search_spaces``: a NAS learner's source comes from
``search_spaces.sources``, imported here only when the config names a search space.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gtn_nas.config import GTN_CHECKPOINTS, MetaTrainConfig, load_config
from gtn_nas.core.generator import make_generator
from gtn_nas.core.learners import FIXED_LEARNERS, LearnerSource, fixed_source, make_learner
from gtn_nas.core.teacher import MetaParams, Teacher
from gtn_nas.errors import CheckpointError, ConfigError
from gtn_nas.io.checkpoint import Checkpointer
from gtn_nas.io.files import read_json
from gtn_nas.io.data.base import IMAGE_SHAPES, NUM_CLASSES
from gtn_nas.meta.outer import init_meta_state


BEST_SCHEMA = {"step": int, "val_acc": float}  # best/best.json


def build_teacher(cfg: MetaTrainConfig, image_shape, num_classes: int) -> Teacher:
    gen = make_generator(cfg.generator, image_shape, cfg.generator_hidden)
    return Teacher(gen, cfg.curriculum, cfg.inner_steps, cfg.batch_size, cfg.noise_dim,
                   num_classes, cfg.learn_labels, cfg.init_lr, cfg.init_momentum, cfg.lr_max,
                   cfg.momentum_max)


def build_learner_source(cfg: MetaTrainConfig, image_shape, num_classes: int) -> LearnerSource:
    """The meta-training learner: a fixed architecture, or a search space sampled every step."""
    if cfg.learner in FIXED_LEARNERS:
        return fixed_source(make_learner(cfg.learner, image_shape, num_classes, cfg.learner_width))
    from search_spaces.sources import space_source

    return space_source(cfg.learner, image_shape, num_classes, channels=cfg.learner_width,
                        cells=cfg.learner_cells, pool=cfg.arch_pool, seed=cfg.seed)


def curriculum_images(teacher: Teacher, meta: MetaParams, key) -> tuple[np.ndarray, np.ndarray]:
    """The whole curriculum as host arrays: images [T, B, H, W, C] and hard labels [T, B]."""
    x, y = jax.jit(teacher.generate)(meta, key)
    return np.asarray(x), np.asarray(jnp.argmax(y, -1))


def load_gtn(run_dir: str | Path, which: str = "best"
             ) -> tuple[MetaTrainConfig, Teacher, MetaParams, int]:
    """Reads a meta-training run: (config, teacher, meta_params, their outer step).

    ``which``: ``best`` (the best-validation meta-parameters; the last ones for a run that has
    no best yet) or ``last``. Non-finite parameters are refused: they can only teach noise.
    """
    if which not in GTN_CHECKPOINTS:
        raise ConfigError(f"checkpoint must be one of {', '.join(GTN_CHECKPOINTS)}, got {which!r}")
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise CheckpointError(f"{run_dir} is not a meta-training run (no config.json); "
                              "pass the --out directory of `gtn-nas meta-train`")
    cfg = load_config(MetaTrainConfig, run_dir / "config.json")  # checked: kind, fields, types
    teacher = build_teacher(cfg, IMAGE_SHAPES[cfg.dataset], NUM_CLASSES[cfg.dataset])
    folder, step = run_dir / "checkpoints", None
    if which == "best" and (run_dir / "best" / "best.json").exists():
        folder = run_dir / "best"
        step = read_json(folder / "best.json", BEST_SCHEMA)["step"]
        if not (folder / str(step)).is_dir():
            raise CheckpointError(f"{folder / 'best.json'} names outer step {step}, but {folder} "
                                  "holds no checkpoint of it (the run is damaged); use "
                                  "--checkpoint last for the run's last meta-parameters")
    meta, latest = restore_meta_params(cfg, teacher, folder, step)
    bad = sum(int(np.sum(~np.isfinite(np.asarray(x)))) for x in jax.tree_util.tree_leaves(meta))
    if bad:  # meta-training never accepts a non-finite step: the file is not what it saved
        raise CheckpointError(f"the meta-parameters in {folder / str(latest)} hold {bad} non-finite "
                              "values; the checkpoint is damaged: delete that step's folder, or "
                              "use --checkpoint last/best for the other one")
    return cfg, teacher, meta, latest


def restore_meta_params(cfg: MetaTrainConfig, teacher: Teacher, folder: Path,
                        step: int | None = None) -> tuple[MetaParams, int]:
    """The meta-parameters checkpointed in ``folder`` at ``step`` (default: the latest)."""
    ckpt = Checkpointer(folder)
    try:
        step = ckpt.latest_step() if step is None else step
        if step is None:
            run = folder.parent
            raise CheckpointError(f"{run} has no checkpoint yet; run `gtn-nas meta-train --out "
                                  f"{run}` first")
        state = ckpt.restore(step, init_meta_state(cfg, teacher, jax.random.PRNGKey(0)))
    finally:
        ckpt.close()
    return jax.tree_util.tree_map(jnp.asarray, state.meta_params), step


__all__ = ["build_learner_source", "build_teacher", "curriculum_images", "load_gtn",
           "restore_meta_params"]
