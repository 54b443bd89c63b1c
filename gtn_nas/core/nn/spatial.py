"""2-D convolution as XLA's convolution op or as shifted slices and one matmul ("im2col").

Why: meta-training differentiates the learner's convolutions twice. On XLA's CPU backend the
transposed convolutions that this produces are slow for the paper's small learners, while
slices, pads, a concatenation and a matmul (all of whose derivatives are again slices, pads and
matmuls) run well: the `base_fc` learner's meta-step at 8/16/32 channels ran 1.9-2.4x faster on
2 cores, `base_larger2`'s 4.2x (benchmarks/RESULTS.md, Speed). It is not a win everywhere: the
NAS-Bench-201 cells' first-order search steps run faster on XLA's op, and their pooling written
as strided slices ran slower than XLA's windowed reductions. So a module asks for slices
(``WNConv(slices=True)``: the fixed conv learners, and the NB201 supernet of meta-training, whose
second-order step they halve) and gets them on CPU only. The
fixed learners' 3x3/2 max pooling has a slice form too (``max_pool_3x3s2``: reshaped pairs, no
strides), which took the `base_fc` meta-step from 3.5 to 2.3 s on 2 cores with ``remat=step``.

The fixed learners go one step further on CPU and keep their activations channel-major (CNHW,
``conv2d_channel_major``): each convolution is then a [Cout, K] x [K, N*H*W] matmul whose two
gradients are again plain row-major matmuls, where NHWC's weight gradient contracted over the
major axis and XLA transposed [N*H*W, C] operands for it (`base_fc` 2.6 -> 1.9 s per meta-step).

``GTN_NAS_CONV=xla|slices`` overrides every module's choice, on any backend (default ``auto``);
``GTN_NAS_LAYOUT=nhwc|cnhw`` the fixed learners' layout (``auto``: CNHW where they use slices).
Every form computes the same function (tests/test_core.py).
"""

from __future__ import annotations

import os
from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp

CONV_IMPLS = ("auto", "xla", "slices")
LAYOUTS = ("auto", "nhwc", "cnhw")

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


def channel_major() -> bool:
    """Whether the fixed conv learners compute channel-major (CNHW) now: $GTN_NAS_LAYOUT
    (auto|nhwc|cnhw, read at trace time); auto is CNHW wherever their convolutions are slices."""
    layout = os.environ.get("GTN_NAS_LAYOUT", "auto")
    if layout not in LAYOUTS:
        from gtn_nas.errors import ConfigError

        raise ConfigError(f"GTN_NAS_LAYOUT must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout == "auto":
        return use_slices(True)
    return layout == "cnhw"


def _pad_spatial(x: jax.Array, axes: tuple[int, int], kernel: tuple[int, int],
                 strides: tuple[int, int], padding: Padding) -> jax.Array:
    """``x`` zero-padded on its two spatial ``axes`` as ``padding`` (a name or explicit pairs) says."""
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads([x.shape[a] for a in axes], kernel, strides, padding)
    if not any(p for pair in padding for p in pair):
        return x
    widths = [(0, 0)] * x.ndim
    for a, pair in zip(axes, padding):
        widths[a] = tuple(pair)
    return jnp.pad(x, widths)


def conv2d(x: jax.Array, w: jax.Array, strides: Sequence[int] = (1, 1),
           padding: Padding = "SAME", slices: bool = False) -> jax.Array:
    """NHWC input, HWIO kernel, no dilation or groups. ``slices``: the module's preference (see
    the module docstring). A 1x1 kernel is always a matmul: XLA:CPU turned its forward into one
    but kept its weight gradient a convolution between transposed copies, 3.1 of the 5.1 ms of an
    NB201 1x1 edge's backward at 28x28x8 (benchmarks/RESULTS.md, Search cost)."""
    strides = tuple(int(s) for s in strides)
    if not use_slices(slices) and w.shape[:2] != (1, 1):
        return jax.lax.conv_general_dilated(x, w, window_strides=strides, padding=padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    kh, kw, cin, cout = w.shape
    (sh, sw) = strides
    x = _pad_spatial(x, (1, 2), (kh, kw), strides, padding)
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    # Row, column, channel: the order of the kernel's flattened HWIO axes, so the kernel is the
    # matmul's right operand as it is.
    cols = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
            for i in range(kh) for j in range(kw)]
    cols = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
    return jnp.dot(cols, w.reshape(kh * kw * cin, cout))


def conv2d_channel_major(x: jax.Array, w: jax.Array, strides: Sequence[int] = (1, 1),
                         padding: Padding = "SAME") -> jax.Array:
    """``conv2d`` as slices on a CNHW input (HWIO kernel), giving CNHW."""
    kh, kw, cin, cout = w.shape
    (sh, sw) = tuple(int(s) for s in strides)
    x = _pad_spatial(x, (2, 3), (kh, kw), (sh, sw), padding)
    n = x.shape[1]
    ho, wo = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    cols = [x[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]
    cols = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=0)
    cols = cols.reshape(kh * kw * cin, n * ho * wo)
    y = jax.lax.dot_general(w.reshape(kh * kw * cin, cout), cols, (((0,), (0,)), ((), ())))
    return y.reshape(cout, n, ho, wo)


def max_pool_3x3s2(x: jax.Array, slices: bool = False, axes: tuple[int, int] = (1, 2)) -> jax.Array:
    """3x3 max pooling, stride 2, padding 1 (the paper's learners' pooling) over the two spatial
    ``axes`` of ``x`` (NHWC's by default; (2, 3) for CNHW).

    As slices (``slices`` and on CPU, like ``conv2d``), for even H and W: each axis in turn is
    reshaped into (even, odd) pairs and out[i] = max(odd[i-1], even[i], odd[i]), so there is no
    strided access. XLA's windowed max differentiates into select-and-gather/scatter loops that
    took a third of the `base_fc` learner's second-order meta-step on 2 cores (benchmarks/
    RESULTS.md, Profile). The winner of each window is found once, as two boolean masks per axis
    (of the input with its gradient stopped: the masks are piecewise constant), and the pooled
    value is the input *picked* by them (``_pick``), a linear map whose transpose (``_unpick``)
    is written out: its result interleaves the even and odd members in one pass, where JAX's own
    transpose of the slices padded each member to full size and added them (0.90x the `base_fc`
    meta-step on both instruction sets, 0.86x `cpu-conv`'s; benchmarks/RESULTS.md, Speed). Each
    is the other's transpose, so derivatives of every order in reverse mode are these two maps by
    the same masks; forward mode (``jax.jvp``) is not supported through them. An exact tie goes to
    the first of (even, odd, previous odd), as XLA's op and PyTorch give it to one input; the sum
    is the same.
    """
    h, w = x.shape[axes[0]], x.shape[axes[1]]
    if not use_slices(slices) or h % 2 or w % 2:
        window, stride, pad = [1] * x.ndim, [1] * x.ndim, [(0, 0)] * x.ndim
        for a in axes:
            window[a], stride[a], pad[a] = 3, 2, (1, 1)
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, tuple(window), tuple(stride), pad)
    for axis in axes:
        x = _pick(x, axis, *_window_winners(jax.lax.stop_gradient(x), axis))
    return x


def _window_parts(x: jax.Array, axis: int, fill: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(even, odd, previous odd) along ``axis``: the three members of each 3-wide, stride-2
    window, the previous odd of the first window being ``fill`` (the padding)."""
    n = x.shape[axis]
    pairs = x.reshape(x.shape[:axis] + (n // 2, 2) + x.shape[axis + 1:])
    even = jax.lax.index_in_dim(pairs, 0, axis + 1, keepdims=False)
    odd = jax.lax.index_in_dim(pairs, 1, axis + 1, keepdims=False)
    return even, odd, _shift(odd, axis, 1, fill)


def _shift(x: jax.Array, axis: int, by: int, fill: float) -> jax.Array:
    """``x`` moved ``by`` (+1 or -1) places along ``axis``, ``fill`` entering at the open end."""
    pad = [(0, 0)] * x.ndim
    pad[axis] = (1, 0) if by > 0 else (0, 1)
    start = 0 if by > 0 else 1
    return jax.lax.slice_in_dim(jnp.pad(x, pad, constant_values=fill), start,
                                start + x.shape[axis], axis=axis)


def _window_winners(x: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
    """The masks (even wins, odd wins) of the windows of ``x`` along ``axis``; where neither
    wins, the previous odd does."""
    even, odd, prev = _window_parts(x, axis, -jnp.inf)
    m_even = (even >= odd) & (even >= prev)
    return m_even, ~m_even & (odd >= prev)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _pick(t: jax.Array, axis: int, m_even: jax.Array, m_odd: jax.Array) -> jax.Array:
    """Each window of ``t`` along ``axis`` reduced to its winner's entry."""
    even, odd, prev = _window_parts(t, axis, 0.0)
    return jnp.where(m_even, even, jnp.where(m_odd, odd, prev))


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _unpick(g: jax.Array, axis: int, m_even: jax.Array, m_odd: jax.Array) -> jax.Array:
    """``_pick``'s transpose: each window's ``g`` placed at its winner, as one interleave."""
    zero = jnp.zeros((), g.dtype)
    to_even = jnp.where(m_even, g, zero)
    to_odd = jnp.where(m_odd, g, zero)
    to_prev = jnp.where(m_even | m_odd, zero, g)  # window i's previous odd is odd i-1
    out = jnp.stack([to_even, to_odd + _shift(to_prev, axis, -1, 0.0)], axis=axis + 1)
    return out.reshape(g.shape[:axis] + (2 * g.shape[axis],) + g.shape[axis + 1:])


def _transposed_by(linear_map):
    """A custom VJP rule for a linear map of ``(t, axis, *masks)`` whose transpose is ``linear_map``."""
    def bwd(axis, masks, cotangent):
        return (linear_map(cotangent, axis, *masks), None, None)
    return bwd


_pick.defvjp(lambda t, axis, *masks: (_pick(t, axis, *masks), masks), _transposed_by(_unpick))
_unpick.defvjp(lambda g, axis, *masks: (_unpick(g, axis, *masks), masks), _transposed_by(_pick))
