"""2-D convolution as XLA's convolution op or as shifted slices and one matmul ("im2col").

Why: meta-training differentiates the learner's convolutions twice. On XLA's CPU backend the
transposed convolutions that this produces are slow for the paper's small learners, while
slices, pads, a concatenation and a matmul (all of whose derivatives are again slices, pads and
matmuls) run well: the `base_fc` learner's meta-step at 8/16/32 channels ran 1.9-2.4x faster on
2 cores, `base_larger2`'s 4.2x (benchmarks/RESULTS.md, Speed). It is not a win everywhere: the
NAS-Bench-201 cells' 3x3 convolutions over 4 to 8 channels at 28x28 ran slower as slices, and
their pooling written as strided slices ran slower than XLA's windowed reductions. So a module asks
for slices (``WNConv(slices=True)``: the fixed conv learners) and gets them on CPU only. The
fixed learners' 3x3/2 max pooling has a slice form too (``max_pool_3x3s2``: reshaped pairs, no
strides), which took the `base_fc` meta-step from 3.5 to 2.3 s on 2 cores with ``remat=step``.

``GTN_NAS_CONV=xla|slices`` overrides every module's choice, on any backend (default ``auto``).
Both forms compute the same function (tests/test_core.py).
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import jax.numpy as jnp

CONV_IMPLS = ("auto", "xla", "slices")

Padding = str | Sequence[tuple[int, int]]


def conv_setting() -> str:
    """$GTN_NAS_CONV, checked: read at trace time, so caches of compiled programs key on it."""
    impl = os.environ.get("GTN_NAS_CONV", "auto")
    if impl not in CONV_IMPLS:
        from gtn_nas.errors import ConfigError

        raise ConfigError(f"GTN_NAS_CONV must be one of {', '.join(CONV_IMPLS)}, got {impl!r}")
    return impl


def use_slices(preferred: bool) -> bool:
    """Whether ``conv2d`` computes as slices now, for a module that prefers them or not."""
    impl = conv_setting()
    if impl == "auto":
        return preferred and jax.default_backend() == "cpu"
    return impl == "slices"


def conv2d(x: jax.Array, w: jax.Array, strides: Sequence[int] = (1, 1),
           padding: Padding = "SAME", slices: bool = False) -> jax.Array:
    """NHWC input, HWIO kernel, no dilation or groups. ``slices``: the module's preference (see
    the module docstring)."""
    strides = tuple(int(s) for s in strides)
    if not use_slices(slices):
        return jax.lax.conv_general_dilated(x, w, window_strides=strides, padding=padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    kh, kw, cin, cout = w.shape
    (sh, sw) = strides
    if isinstance(padding, str):
        pads = jax.lax.padtype_to_pads(x.shape[1:3], (kh, kw), strides, padding)
    else:
        pads = padding
    (pt, pb), (pl, pr) = pads
    if pt or pb or pl or pr:
        x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    # Row, column, channel: the order of the kernel's flattened HWIO axes, so the kernel is the
    # matmul's right operand as it is.
    cols = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
            for i in range(kh) for j in range(kw)]
    cols = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
    return jnp.dot(cols, w.reshape(kh * kw * cin, cout))


def max_pool_3x3s2(x: jax.Array, slices: bool = False) -> jax.Array:
    """3x3 max pooling, stride 2, padding 1 (the paper's learners' pooling) of NHWC ``x``.

    As slices (``slices`` and on CPU, like ``conv2d``), for even H and W: each axis in turn is
    reshaped into (even, odd) pairs and out[i] = max(odd[i-1], even[i], odd[i]), so there is no
    strided access and every derivative is again maxima, pads and reshapes. XLA's windowed max
    differentiates into select-and-gather/scatter loops that took a third of the `base_fc`
    learner's second-order meta-step on 2 cores (benchmarks/RESULTS.md, Profile). Exact ties
    split the gradient evenly where XLA's op gives it to one input; the sum is the same.
    """
    h, w = x.shape[1], x.shape[2]
    if not use_slices(slices) or h % 2 or w % 2:
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                                     ((0, 0), (1, 1), (1, 1), (0, 0)))

    def along(x, axis):
        n = x.shape[axis]
        pairs = x.reshape(x.shape[:axis] + (n // 2, 2) + x.shape[axis + 1:])
        even = jax.lax.index_in_dim(pairs, 0, axis + 1, keepdims=False)
        odd = jax.lax.index_in_dim(pairs, 1, axis + 1, keepdims=False)
        pad = [(0, 0)] * odd.ndim
        pad[axis] = (1, 0)
        prev = jax.lax.slice_in_dim(jnp.pad(odd, pad, constant_values=-jnp.inf), 0, n // 2,
                                    axis=axis)
        return jnp.maximum(jnp.maximum(even, odd), prev)

    return along(along(x, 1), 2)
