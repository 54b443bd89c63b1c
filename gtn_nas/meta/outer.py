"""The outer step: the meta-gradient estimate applied by an optax chain, behind guards.

The outer optimiser is Adam with a cosine decay to ``final_relative_lr``·lr and optional
global-norm clipping (``core.optim``). A step is skipped, not applied, when its loss,
meta-gradient or result is not finite, or when its meta-gradient norm is a spike (above
``spike_factor`` times the running mean of accepted norms): near the edge of stability of the
unrolled loop the meta-gradient is chaotic and huge, and one Adam step along it can wreck the
generator (benchmarks/RESULTS.md, Robustness). A skipped step leaves the meta-parameters and the
optimiser state as they were. (``optax.apply_if_finite`` does the finiteness half, but it keeps
its counters inside the optimiser state and cannot see a spike; the guard here keeps both
decisions in one place and the checkpoint layout of ``MetaState`` unchanged.)
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gtn_nas.config import MetaTrainConfig
from gtn_nas.core.optim import make_optimizer
from gtn_nas.core.teacher import MetaParams, Teacher
from gtn_nas.meta.estimator import Estimator


class MetaState(NamedTuple):
    step: jax.Array  # int32 scalar: outer steps attempted so far
    meta_params: MetaParams
    opt_state: Any
    grad_ema: jax.Array  # float32 scalar: running mean of accepted meta-gradient norms (0: none yet)
    lr_scale: jax.Array  # float32 scalar: meta-lr multiplier, halved by each rollback


SPIKE_WARMUP = 10  # outer steps before the spike test starts (the running mean settles)
SPIKE_EMA = 0.9  # decay of the running mean of meta-gradient norms
SPIKE_GROWTH = 1.05  # a rejected spike raises the mean, so a lasting change of scale gets through


def outer_optimizer(cfg: MetaTrainConfig) -> optax.GradientTransformation:
    rule = functools.partial(optax.adam, b1=cfg.meta_b1, b2=cfg.meta_b2, eps=cfg.meta_eps)
    return make_optimizer(rule, cfg.meta_lr, cfg.iterations, final_fraction=cfg.final_relative_lr,
                          grad_clip=cfg.grad_clip)[0]


def init_meta_state(cfg: MetaTrainConfig, teacher: Teacher, key: jax.Array) -> MetaState:
    # Strong dtypes: a weakly typed init leaf would make the second step retrace and recompile.
    meta = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=x.dtype), jax.jit(teacher.init)(key))
    return MetaState(jnp.zeros((), jnp.int32), meta, outer_optimizer(cfg).init(meta),
                     jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32))


def all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def guarded_update(cfg: MetaTrainConfig, opt: optax.GradientTransformation, ms: MetaState,
                   loss: jax.Array, grads: MetaParams) -> tuple[MetaState, dict[str, jax.Array]]:
    """Applies ``grads`` unless the step is non-finite or a spike; returns the new state and
    what was decided (``finite``, ``spike``, ``grad_norm``)."""
    norm = optax.tree.norm(grads)
    updates, new_opt = opt.update(grads, ms.opt_state, ms.meta_params)
    updates = jax.tree_util.tree_map(lambda u: ms.lr_scale * u, updates)
    new_meta = optax.apply_updates(ms.meta_params, updates)
    finite = jnp.isfinite(loss) & all_finite(grads) & all_finite(new_meta) & all_finite(new_opt)
    settled = ms.step >= SPIKE_WARMUP
    spike = finite & settled & (cfg.spike_factor > 0) & (norm > cfg.spike_factor * ms.grad_ema)
    accept = finite & ~spike
    keep = lambda new, old: jnp.where(accept, new, old)  # noqa: E731 - skip a rejected step
    new_meta = jax.tree_util.tree_map(keep, new_meta, ms.meta_params)
    new_opt = jax.tree_util.tree_map(keep, new_opt, ms.opt_state)
    ema = jnp.where(ms.grad_ema > 0, SPIKE_EMA * ms.grad_ema + (1 - SPIKE_EMA) * norm, norm)
    ema = jnp.where(accept, ema, jnp.where(spike, SPIKE_GROWTH * ms.grad_ema, ms.grad_ema))
    new = MetaState(ms.step + 1, new_meta, new_opt, ema.astype(jnp.float32), ms.lr_scale)
    return new, {"grad_norm": norm, "finite": finite, "spike": spike}


def make_meta_step(cfg: MetaTrainConfig, teacher: Teacher, estimate: Estimator):
    """The whole outer step as one function: estimate, guard, optax update.

    meta_step(meta_state, arch, key, train_images, train_labels) -> (meta_state, metrics)
    """
    opt = outer_optimizer(cfg)

    def meta_step(ms: MetaState, arch, key, images, labels):
        loss, grads, metrics = estimate(ms.meta_params, arch, key, images, labels)
        new, decided = guarded_update(cfg, opt, ms, loss, grads)
        lrs, moms = teacher.schedule(ms.meta_params)
        metrics = dict(metrics, **decided, lr_mean=jnp.mean(lrs), mom_mean=jnp.mean(moms),
                       lr_max=jnp.max(lrs), mom_max=jnp.max(moms),
                       **{f"grad_norm_{k}": optax.tree.norm(v) for k, v in grads.items()})
        return new, metrics

    return meta_step


__all__ = ["MetaState", "SPIKE_EMA", "SPIKE_GROWTH", "SPIKE_WARMUP", "all_finite",
           "guarded_update", "init_meta_state", "make_meta_step", "outer_optimizer"]
