"""Plain (not meta-) training and scoring of learners: the pieces evaluate, search and the
meta-trainer's periodic validation share.

All of these run a fresh learner through ``unroll`` exactly as meta-training does, so a learner
trained here on GTN data sees the same inner loop the GTN was optimised for.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gtn_nas.core.images import normalize
from gtn_nas.core.learners import Learner
from gtn_nas.core.metrics import count_correct, split_accuracy
from gtn_nas.core.teacher import MetaParams, Teacher
from gtn_nas.core.unroll import InnerState, init_inner_state, sgd_step, unroll


def train_on_teacher(teacher: Teacher, learner: Learner, meta: MetaParams, key: jax.Array,
                     steps: int | None = None) -> InnerState:
    """A fresh learner trained on the GTN's curriculum with its learned lr/momentum schedule.

    ``steps`` < T uses the first steps of the curriculum; > T is an error the caller checks.
    """
    k_init, k_data = jax.random.split(key)
    xs, ys = teacher.generate(meta, k_data)
    lrs, moms = teacher.schedule(meta)
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


def lr_schedule(lr, steps: int, kind: str = "constant") -> jax.Array:
    """Per-step learning rates [steps]: ``constant``, or ``cosine`` from lr down to 0."""
    lrs = jnp.full((steps,), lr, jnp.float32)
    if kind == "cosine":
        lrs = lrs * 0.5 * (1 + jnp.cos(jnp.pi * jnp.arange(steps, dtype=jnp.float32) / steps))
    return lrs


def train_on_real(learner: Learner, images: jax.Array, labels: jax.Array, key: jax.Array, *,
                  steps: int, batch: int, lr, momentum, mean, std, num_classes: int,
                  schedule: str = "constant") -> InnerState:
    """The baseline: the same learner and inner loop, on real batches with a fixed momentum and
    a constant or cosine-decayed lr."""
    k_init, k_data = jax.random.split(key)
    xs, ys = real_batches(k_data, images, labels, steps, batch, mean, std)
    lrs = lr_schedule(lr, steps, schedule)
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
        return count_correct(logits, yc, vc)

    return jnp.sum(jax.lax.map(one, (x, y, valid))) / n


# Each searched genotype compiles its own step and eval programs once, for a few dozen steps of
# use: on CPU, LLVM's expensive passes cost more compile time than they save (NB201, C=4, 32
# steps, 2 cores: compile 9.1 -> 7.2 s, train 7.6 -> 7.0 s per architecture; benchmarks/RESULTS.md).
CPU_COMPILE_OPTIONS = {"xla_llvm_disable_expensive_passes": True}


def recalibrate_bn(learner: Learner, state: InnerState, images: jax.Array) -> InnerState:
    """``state`` with the batch-norm statistics of one train-mode pass over ``images``
    (normalised): after T steps on synthetic data, the statistics of real data. On 50 MNIST
    NB201 cells this lifted the GTN proxy's rank correlation from 0.21 to 0.47 and cut its
    init-seed spread (benchmarks/RESULTS.md, Proxy quality)."""
    return state._replace(stats=learner.apply(state.params, state.stats, images, True)[1])


class SteppedLearner:
    """One learner's init, inner step and eval chunk as separately compiled programs, driven by
    a Python loop over the steps.

    XLA's CPU backend runs a convolutional inner step about 10x slower inside a while loop
    (``lax.scan``) than as a program of its own (measured on 2 cores, NB201 C=16 on MNIST, batch
    128: 5.3 s vs 0.44 s per step), and compiles a scan of T steps slower too. Plain (not meta-)
    training has no gradient through the loop, so nothing is lost by stepping from the host; the
    results equal ``train_on_teacher``/``train_on_real`` + ``score`` for the same keys.

    ``learner`` is one network, or a function ``arch -> Learner`` whose architecture is an
    argument of the compiled programs (the NB201 shared supernet): then one compilation serves
    every architecture, passed as ``arch`` to ``train`` and ``accuracy``.
    """

    def __init__(self, learner: Learner | Callable[[Any], Learner], mean, std, chunk: int):
        self.mean, self.std, self.chunk = mean, std, chunk
        learner_of = (lambda arch: learner) if isinstance(learner, Learner) else learner
        # Eager on purpose: compiling a cell network's init costs ~30 s per genotype, while its
        # eager ops (same shapes across genotypes) compile once per search, then 0.2 s each.
        # (A shared learner's init does not depend on the architecture.)
        self.init = lambda key: init_inner_state(learner_of(None), key)
        self._step = jax.jit(
            lambda st, x, y, lr, mom, arch: sgd_step(learner_of(arch), st, x, y, lr, mom)[0],
            donate_argnums=0)

        def correct(st, x, y, valid, arch):
            logits, _ = learner_of(arch).apply(st.params, st.stats, normalize(x, mean, std), False)
            return count_correct(logits, y, valid)

        self._correct = jax.jit(correct)
        self._recalibrate = jax.jit(
            lambda st, x, arch: recalibrate_bn(learner_of(arch), st, x))
        self.compiled = False

    def compile(self, key: jax.Array, batch_sizes, image_shape, num_classes: int,
                val_dtype, arch=None) -> float:
        """Compiles the step for each batch size and the eval chunk; returns the seconds taken.
        ``arch``: an example architecture (its shape and dtype) for a shared learner."""
        import time

        t0 = time.perf_counter()
        opts = CPU_COMPILE_OPTIONS if jax.default_backend() == "cpu" else None
        st = jax.eval_shape(self.init, key)
        f32 = jax.ShapeDtypeStruct((), jnp.float32)
        a = None if arch is None else jax.ShapeDtypeStruct(np.shape(arch), jnp.asarray(arch).dtype)
        step, self._steps = self._step, {}
        for b in sorted(set(int(b) for b in batch_sizes)):
            self._steps[b] = step.lower(
                st, jax.ShapeDtypeStruct((b, *image_shape), jnp.float32),
                jax.ShapeDtypeStruct((b, num_classes), jnp.float32), f32, f32, a).compile(opts)
        c = self.chunk
        self._correct = self._correct.lower(
            st, jax.ShapeDtypeStruct((c, *image_shape), val_dtype),
            jax.ShapeDtypeStruct((c,), jnp.int32), jax.ShapeDtypeStruct((c,), jnp.bool_),
            a).compile(opts)
        self.compiled = True
        return time.perf_counter() - t0

    def train(self, key_init: jax.Array, xs, ys, lrs, moms, arch=None) -> InnerState:
        return self.run(self.init(key_init), xs, ys, lrs, moms, arch)

    def run(self, st: InnerState, xs, ys, lrs, moms, arch=None) -> InnerState:
        """The inner steps from ``st`` (``init``'s state), one compiled step call per batch."""
        step = self._steps[int(xs.shape[1])] if self.compiled else self._step
        for t in range(xs.shape[0]):
            st = step(st, xs[t], ys[t], lrs[t], moms[t], arch)
        return st

    def recalibrate(self, st: InnerState, images, arch=None) -> InnerState:
        """``recalibrate_bn`` (compiled on first use: one program per learner and batch)."""
        return self._recalibrate(st, images, arch)

    def accuracy(self, st: InnerState, images, labels, arch=None) -> float:
        return split_accuracy(lambda x, y, valid: self._correct(st, x, y.astype(np.int32), valid, arch),
                              np.asarray(images), np.asarray(labels), self.chunk)


__all__ = ["SteppedLearner", "lr_schedule", "real_batches", "recalibrate_bn", "score", "train_on_real",
           "train_on_teacher"]
