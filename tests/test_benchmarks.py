"""Benchmark helpers whose figures RESULTS.md relies on."""

import jax
import jax.numpy as jnp

from benchmarks.scaling import _flops, unrolled_flops
from gtn_nas.core.learners import make_learner
from gtn_nas.core.unroll import init_inner_state, unroll


def test_unrolled_flops_count_every_inner_step():
    """XLA's cost analysis counts a scan body once; the unrolled lowering counts all T steps."""
    learner = make_learner("mlp", (8, 8, 1), 10, 16)
    state = init_inner_state(learner, jax.random.PRNGKey(0))
    steps = 8
    xs = jnp.ones((steps, 4, 8, 8, 1))
    ys = jax.nn.one_hot(jnp.arange(steps * 4).reshape(steps, 4) % 10, 10)
    lrs = moms = jnp.full((steps,), 0.1)

    def lower(scan_unroll=1):
        def loss(st):
            final, losses, _ = unroll(learner, st, xs, ys, lrs, moms, remat="none",
                                      scan_unroll=scan_unroll)
            return jnp.sum(losses)

        return jax.jit(jax.grad(loss)).lower(state)

    rolled = _flops(lower().cost_analysis())
    unrolled = unrolled_flops(lower)
    assert 0.8 * steps < unrolled / rolled < 1.2 * steps
