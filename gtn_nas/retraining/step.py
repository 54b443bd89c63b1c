"""One jitted, donated SGD step of final training, its optimiser, augmentation and accuracy.

* loss = CE(smooth(y), f(x)) + aux_weight * CE(smooth(y), aux(x)), the auxiliary head optional and
  label smoothing ``smooth(y) = (1 - eps) y + eps / K`` off by default;
* SGD with momentum (PyTorch's form ``buf = m buf + g``; Nesterov optional) on the gradient after
  global-norm clipping and then weight decay (PyTorch's order in NAO/DARTS);
* per-step cosine learning rate ``lr_t = lr_min + (lr - lr_min) (1 + cos(pi t / T)) / 2`` over the
  T steps after an optional linear warm-up;
* drop-path probability of cell i of n at step t: ``drop_path * (i + 1) / n * t / T`` (ramped with
  depth by the network, with training progress here), dropout before the classifier;
* augmentation on the accelerator inside the jitted step: random crop (pad 4) with or without a
  horizontal flip, then Cutout.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gtn_nas.config import RetrainConfig
from gtn_nas.core import optim
from gtn_nas.core.images import cutout, normalize, random_crop
from gtn_nas.core.metrics import accuracy, count_correct, split_accuracy
from gtn_nas.retraining.model import Variables

Params = Any  # pytree of arrays


class TrainState(NamedTuple):
    params: Params
    batch_stats: Params
    opt_state: Any
    step: jax.Array  # int32 [], optimizer steps taken


def sgd_optimizer(cfg: RetrainConfig, steps_per_epoch: int):
    """(optax transformation, lr schedule): clip -> weight decay -> SGD momentum, cosine lr."""
    rule = functools.partial(optax.sgd, momentum=cfg.momentum or None, nesterov=cfg.nesterov)
    return optim.make_optimizer(
        rule, cfg.lr, cfg.epochs * steps_per_epoch, final_fraction=cfg.lr_min / cfg.lr,
        warmup=int(round(cfg.warmup_epochs * steps_per_epoch)), grad_clip=cfg.grad_clip,
        weight_decay=cfg.weight_decay)


def make_augment(cfg: RetrainConfig, mean, std) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """uint8 [B, H, W, C] -> normalised float32, augmented as ``cfg`` says (runs under jit)."""

    def augment(key: jax.Array, images: jax.Array) -> jax.Array:
        k_crop, k_cut = jax.random.split(key)
        if cfg.augment in ("crop", "crop_flip"):
            images = random_crop(k_crop, images, flip=cfg.augment == "crop_flip")
        x = normalize(images, mean, std)
        return cutout(k_cut, x, cfg.cutout) if cfg.cutout else x

    return augment


def _recipe(cfg: RetrainConfig) -> RetrainConfig:
    """The fields a compiled step depends on (paths, logging and the seed, passed as keys, not)."""
    return dataclasses.replace(cfg, out=".", data_dir=None, preset="cpu", top=None, seed=0,
                               log_every=1, checkpoint_every=1, eval_batch_size=1,
                               eval_subset=0, train_subset=0, split_seed=0)


def make_train_step(cfg: RetrainConfig, model, mean, std, num_classes: int,
                    steps_per_epoch: int):
    """One jitted, donated SGD step:
    ``(state, images, labels, idx[B], k_aug, k_drop) -> (state, metrics)``.

    ``images``/``labels`` are the whole (device-resident) training split; ``idx`` picks the batch.
    The same recipe, network and data shape give the same jitted function, so a second run in one
    process (a test, a notebook) does not compile again.
    """
    return _cached_train_step(_recipe(cfg), model, tuple(mean), tuple(std), num_classes,
                              steps_per_epoch)


@functools.lru_cache(maxsize=8)
def _cached_train_step(cfg: RetrainConfig, model, mean, std, num_classes: int,
                       steps_per_epoch: int):
    tx, schedule = sgd_optimizer(cfg, steps_per_epoch)
    total_steps = cfg.epochs * steps_per_epoch
    augment = make_augment(cfg, mean, std)

    def loss_fn(params, batch_stats, x, y, step, k_drop):
        progress = step.astype(jnp.float32) / total_steps  # drop-path ramp over training
        out, updated = model.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True,
            drop_path_scale=progress, mutable=["batch_stats"],
            rngs={"dropout": jax.random.fold_in(k_drop, step)})
        logits, aux = out if cfg.auxiliary else (out, None)
        targets = jax.nn.one_hot(y, num_classes)  # [B, K]
        if cfg.label_smoothing:
            targets = optax.smooth_labels(targets, cfg.label_smoothing)
        loss = jnp.mean(optax.softmax_cross_entropy(logits, targets))
        total = loss
        if aux is not None:
            total = total + cfg.aux_weight * jnp.mean(optax.softmax_cross_entropy(aux, targets))
        return total, (loss, logits, updated["batch_stats"])

    def step_fn(state: TrainState, images, labels, idx, k_aug, k_drop):
        y = labels[idx]  # [B]
        x = augment(jax.random.fold_in(k_aug, state.step), images[idx])  # [B, H, W, C]
        grads, (loss, logits, stats) = jax.grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats, x, y, state.step, k_drop)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "acc": accuracy(logits, y),
                   "lr": schedule(state.step), "grad_norm": optax.tree.norm(grads)}
        return TrainState(params, stats, opt_state, state.step + 1), metrics

    return jax.jit(step_fn, donate_argnums=0)


@functools.lru_cache(maxsize=8)
def _cached_opt_init(cfg: RetrainConfig, steps_per_epoch: int):
    return jax.jit(sgd_optimizer(cfg, steps_per_epoch)[0].init)


def init_train_state(cfg: RetrainConfig, variables: Variables, steps_per_epoch: int) -> TrainState:
    """Step 0: the given variables and a fresh optimiser state."""
    opt_state = _cached_opt_init(_recipe(cfg), steps_per_epoch)(variables["params"])
    return TrainState(variables["params"], variables["batch_stats"], opt_state,
                      jnp.zeros((), jnp.int32))


def eval_chunk(cfg: RetrainConfig, *sizes: int) -> int:
    """Evaluation batch: ``eval_batch_size`` or the largest split if smaller (one program)."""
    return max(1, min(cfg.eval_batch_size, max(sizes)))


@functools.lru_cache(maxsize=8)
def _correct_fn(model, mean, std):
    @jax.jit
    def correct(variables, x, y, valid):
        logits = model.apply(variables, normalize(x, mean, std), train=False)
        return count_correct(logits, y, valid)

    return correct


def make_accuracy(model, mean, std, chunk: int):
    """accuracy(variables, images, labels): eval-mode accuracy over a split in fixed chunks
    (the tail padded and masked, so one compiled program serves every split)."""
    correct = _correct_fn(model, tuple(mean), tuple(std))

    def accuracy(variables: Variables, images: np.ndarray, labels: np.ndarray) -> float:
        return split_accuracy(lambda x, y, valid: correct(variables, x, y, valid), images, labels,
                              chunk)

    return accuracy


__all__ = ["TrainState", "eval_chunk", "init_train_state", "make_accuracy", "make_augment",
           "make_train_step", "sgd_optimizer"]
