"""The meta-loss and its gradient estimator (learned_optimization's estimator role).

meta_loss(φ) = mean over fresh learners of [ NLL(θ_T(φ); real batch) + w · Σ_k NLL(θ_{kU}(φ); real batch_k) ]
where θ_t(φ) is a learner unrolled t steps on the teacher's synthetic batches (``core.unroll``).
``full_backprop`` differentiates it through every inner update: the exact second-order
meta-gradient with respect to φ (generator, curriculum, lr and momentum logits). Another
estimator (truncated, evolution strategies) would slot in behind the same signature:
``estimate(meta_params, arch, key, images, labels) -> (loss, grads, metrics)``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from gtn_nas.config import MetaTrainConfig
from gtn_nas.core.distributed import shard_learners
from gtn_nas.core.learners import LearnerSource
from gtn_nas.core.metrics import accuracy, nll
from gtn_nas.core.teacher import MetaParams, Teacher
from gtn_nas.core.training import real_batches
from gtn_nas.core.unroll import init_inner_state, num_intermediate, unroll

MetaLoss = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
Estimator = Callable[..., tuple[jax.Array, MetaParams, dict[str, jax.Array]]]


def make_meta_loss(cfg: MetaTrainConfig, teacher: Teacher, source: LearnerSource, mean, std,
                   augment=None, mesh=None, scan_unroll: int | bool = 1) -> MetaLoss:
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


def full_backprop(meta_loss: MetaLoss) -> Estimator:
    """The exact meta-gradient: reverse mode through the whole unroll."""
    grad_fn = jax.value_and_grad(meta_loss, has_aux=True)

    def estimate(meta: MetaParams, arch: Any, key: jax.Array, images, labels):
        (loss, metrics), grads = grad_fn(meta, arch, key, images, labels)
        return loss, grads, metrics

    return estimate


__all__ = ["Estimator", "MetaLoss", "full_backprop", "make_meta_loss"]
