"""Plain (not meta-) training and scoring of learners: the pieces evaluate, search and the
meta-trainer's periodic validation share.

All of these run a fresh learner through ``unroll`` exactly as meta-training does, so a learner
trained here on GTN data sees the same inner loop the GTN was optimised for.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gtn_nas.data.base import normalize
from gtn_nas.learners import Learner
from gtn_nas.teacher import MetaParams, Teacher
from gtn_nas.unroll import InnerState, accuracy, init_inner_state, unroll


def train_on_teacher(teacher: Teacher, learner: Learner, meta: MetaParams, key: jax.Array,
                     steps: int | None = None) -> InnerState:
    """A fresh learner trained on the GTN's curriculum with its learned lr/momentum schedule.

    ``steps`` < T uses the first steps of the curriculum; > T is an error the caller checks.
    """
    k_init, k_data = jax.random.split(key)
    xs, ys = teacher.generate(meta, k_data)
    lrs, moms = Teacher.schedule(meta)
    n = steps or teacher.inner_steps
    state = init_inner_state(learner, k_init)
    final, _, _ = unroll(learner, state, xs[:n], ys[:n], lrs[:n], moms[:n], remat="none")
    return final


def real_batches(key: jax.Array, images: jax.Array, labels: jax.Array, steps: int, batch: int,
                 mean, std, augment=None) -> tuple[jax.Array, jax.Array]:
    """``steps`` real batches drawn uniformly with replacement: ([steps, batch, H, W, C], [steps, batch])."""
    k_idx, k_aug = jax.random.split(key)
    idx = jax.random.randint(k_idx, (steps, batch), 0, images.shape[0])
    x = images[idx]
    if augment is not None:  # on raw pixels, so a crop's padding is black as in torchvision
        x = augment(k_aug, x.reshape(steps * batch, *x.shape[2:])).reshape(x.shape)
    return normalize(x, mean, std), labels[idx]


def train_on_real(learner: Learner, images: jax.Array, labels: jax.Array, key: jax.Array, *,
                  steps: int, batch: int, lr, momentum, mean, std, num_classes: int) -> InnerState:
    """The baseline: the same learner and inner loop, on real batches with a fixed lr/momentum."""
    k_init, k_data = jax.random.split(key)
    xs, ys = real_batches(k_data, images, labels, steps, batch, mean, std)
    lrs = jnp.full((steps,), lr, jnp.float32)
    moms = jnp.full((steps,), momentum, jnp.float32)
    state = init_inner_state(learner, k_init)
    final, _, _ = unroll(learner, state, xs, jax.nn.one_hot(ys, num_classes), lrs, moms, remat="none")
    return final


def score(learner: Learner, state: InnerState, images: jax.Array, labels: jax.Array, mean, std,
          chunk: int = 1000) -> jax.Array:
    """Eval-mode accuracy over a whole split, in chunks (the tail chunk is padded and masked)."""
    n = images.shape[0]
    chunks = -(-n // chunk)
    pad = chunks * chunk - n
    x = jnp.pad(images, ((0, pad),) + ((0, 0),) * (images.ndim - 1)).reshape(chunks, chunk, *images.shape[1:])
    y = jnp.pad(labels, (0, pad)).reshape(chunks, chunk)
    valid = (jnp.arange(chunks * chunk) < n).reshape(chunks, chunk)

    def one(args):
        xc, yc, vc = args
        logits, _ = learner.apply(state.params, state.stats, normalize(xc, mean, std), False)
        return jnp.sum((jnp.argmax(logits, -1) == yc) & vc)

    return jnp.sum(jax.lax.map(one, (x, y, valid))) / n


def subset(images: np.ndarray, labels: np.ndarray, size: int, seed: int = 0):
    """A fixed, seeded subset (the whole split when ``size`` >= its length)."""
    if size >= len(labels):
        return images, labels
    idx = np.random.default_rng(seed).permutation(len(labels))[:size]
    return images[idx], labels[idx]


__all__ = ["train_on_teacher", "train_on_real", "real_batches", "score", "subset", "accuracy"]
