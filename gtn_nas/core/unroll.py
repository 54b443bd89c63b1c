"""The inner loop: train a fresh learner T steps of SGD with momentum, differentiably.

Step t (heavy-ball momentum, no dampening, no weight decay; gtn-spec 1.7):
    g_t = d/dθ CE(f(θ_t, x_t), y_t),  buf_{t+1} = mom_t · buf_t + g_t,  θ_{t+1} = θ_t − lr_t · buf_{t+1}
The carry (θ, buf, batch-norm statistics) runs through ``lax.scan``; nothing is stopped, so
``jax.grad`` of anything computed from the result is the exact second-order meta-gradient.
Optional intermediate losses: at steps t = U, 2U, ... < T, the eval-mode loss of θ_t (before the
step's update, with the carried statistics) on a real batch is accumulated.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gtn_nas.errors import ConfigError
from gtn_nas.core.learners import Learner
from gtn_nas.core.metrics import nll

REMAT_LEVELS = ("none", "step", "nested")


class InnerState(NamedTuple):
    params: Any
    momentum: Any
    stats: Any  # batch_stats carried through the unroll (differentiated)


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """−Σ y·log_softmax / B: works for one-hot and learned soft labels alike."""
    return -jnp.sum(targets * jax.nn.log_softmax(logits)) / logits.shape[0]


def init_inner_state(learner: Learner, key: jax.Array) -> InnerState:
    params, stats = learner.init(key)
    return InnerState(params, jax.tree_util.tree_map(jnp.zeros_like, params), stats)


def _nested_block(steps: int) -> int:
    """Largest divisor of T not above sqrt(T): the outer block length of nested remat."""
    best = 1
    for k in range(1, int(steps**0.5) + 1):
        if steps % k == 0:
            best = k
    return best


def sgd_step(learner: Learner, st: InnerState, x: jax.Array, y: jax.Array, lr, mom
             ) -> tuple[InnerState, jax.Array]:
    """One inner step: SGD with momentum on a soft-labelled batch, BN statistics carried."""
    def loss_fn(p):
        logits, new_stats = learner.apply(p, st.stats, x, True)
        return soft_cross_entropy(logits, y), new_stats

    (loss, new_stats), g = jax.value_and_grad(loss_fn, has_aux=True)(st.params)
    params, buf = momentum_update(st.params, st.momentum, g, lr, mom)
    return InnerState(params, buf, new_stats), loss


def momentum_update(params, momentum, grads, lr, mom):
    """Heavy ball (module docstring): buf <- mom * buf + g, params <- params - lr * buf."""
    buf = jax.tree_util.tree_map(lambda b, gi: mom * b + gi, momentum, grads)
    return jax.tree_util.tree_map(lambda p, b: p - lr * b, params, buf), buf


def unroll(
    learner: Learner,
    state: InnerState,
    xs: jax.Array,  # [T, B, H, W, C]
    ys: jax.Array,  # [T, B, classes] (soft) labels
    lrs: jax.Array,  # [T]
    moms: jax.Array,  # [T]
    *,
    remat: str = "step",
    real_xs: jax.Array | None = None,  # [n, Bm, H, W, C] batches for intermediate losses
    real_ys: jax.Array | None = None,  # [n, Bm] int labels
    every: int = 0,
    scan_unroll: int | bool = 1,
) -> tuple[InnerState, jax.Array, jax.Array]:
    """Runs T inner steps. Returns (final state, inner losses [T], summed intermediate loss)."""
    if remat not in REMAT_LEVELS:
        raise ConfigError(f"unknown remat level {remat!r}; choose one of {', '.join(REMAT_LEVELS)}")
    steps = xs.shape[0]
    use_real = every > 0 and real_xs is not None

    def inner_step(carry, inp):
        st, acc = carry
        x, y, lr, mom, t = inp
        if use_real:
            def real_loss(_):
                i = t // every - 1
                logits, _ = learner.apply(st.params, st.stats, real_xs[i], False)
                return nll(logits, real_ys[i])

            is_eval = jnp.logical_and(t > 0, t % every == 0)
            acc = acc + jax.lax.cond(is_eval, real_loss, lambda _: jnp.zeros((), acc.dtype), None)
        st, loss = sgd_step(learner, st, x, y, lr, mom)
        return (st, acc), loss

    step_fn = jax.checkpoint(inner_step) if remat in ("step", "nested") else inner_step
    inputs = (xs, ys, lrs, moms, jnp.arange(steps))
    carry0 = (state, jnp.zeros(()))
    if remat == "nested":
        k = _nested_block(steps)
        blocks = jax.tree_util.tree_map(lambda a: a.reshape(steps // k, k, *a.shape[1:]), inputs)

        @jax.checkpoint
        def block_fn(carry, block_inputs):
            return jax.lax.scan(step_fn, carry, block_inputs)

        (final, inter), losses = jax.lax.scan(block_fn, carry0, blocks)
        losses = losses.reshape(steps)
    else:
        (final, inter), losses = jax.lax.scan(step_fn, carry0, inputs, unroll=scan_unroll)
    return final, losses, inter


def num_intermediate(steps: int, every: int) -> int:
    """How many intermediate losses an unroll of T steps adds: t = U, 2U, ... < T."""
    return 0 if every <= 0 else (steps - 1) // every
