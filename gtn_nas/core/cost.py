"""What a network costs: parameters and forward FLOPs, measured without allocating or compiling.

Both trace the module abstractly (``jax.eval_shape``); FLOPs are XLA's cost analysis of the
*lowered* forward program (eval mode, batch 1, a multiply-add counts 2), cheap enough to run for
every architecture of a search.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _abstract_variables(module: nn.Module, input_shape: Sequence[int], call_kwargs: dict):
    x = jnp.zeros((1, *input_shape), jnp.float32)
    return jax.eval_shape(lambda k: module.init(k, x, train=False, **call_kwargs),
                          jax.random.PRNGKey(0))


def count_params(module: nn.Module, input_shape: Sequence[int], **call_kwargs: Any) -> int:
    """Trainable parameters (the 'params' collection) of ``module`` on images of ``input_shape``.

    ``call_kwargs`` go to the module's ``__call__`` (e.g. ``arch=`` for the NB201 shared module).
    """
    shapes = _abstract_variables(module, tuple(input_shape), call_kwargs)
    return int(sum(x.size for x in jax.tree_util.tree_leaves(shapes["params"])))


def count_flops(module: nn.Module, input_shape: Sequence[int], **call_kwargs: Any) -> float:
    """Forward FLOPs per image (eval mode, batch 1)."""
    shape = tuple(input_shape)
    variables = _abstract_variables(module, shape, call_kwargs)
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    forward = jax.jit(lambda v, x: module.apply(v, x, train=False, **call_kwargs))
    cost = forward.lower(variables, x).cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


__all__ = ["count_flops", "count_params"]
