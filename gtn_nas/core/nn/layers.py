"""Weight normalisation and batch-norm variants, as Flax modules that stay pure functions.

Weight norm (Salimans & Kingma 2016): w = g * v / ||v||, the norm over every axis but the output
one; v starts Kaiming-normal (fan_in, gain sqrt 2) and g = ||v||, so the first effective weights
equal v. GTN depends on it for stable meta-training (gtn-spec 1.6).

Batch-norm statistics live in the ``batch_stats`` collection, which callers pass in and get back
explicitly: inside the unrolled inner loop that state is carried through ``lax.scan`` and
differentiated like any other value. ``momentum`` is the weight of the old statistic, so
``momentum=0`` (the GTN learners' setting) stores exactly the last train-mode batch's statistic.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gtn_nas.core.nn.spatial import conv2d, conv2d_channel_major

_kaiming_normal = jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def leaky_relu(x: jax.Array) -> jax.Array:
    """LeakyReLU(0.1), the activation of every GTN learner and generator layer."""
    return jax.nn.leaky_relu(x, negative_slope=0.1)


def _torch_bias_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape: jax.random.uniform(key, shape, minval=-bound, maxval=bound)


def channel(v: jax.Array, ndim: int, axis: int = -1) -> jax.Array:
    """A per-channel vector shaped to broadcast against an array of rank ``ndim`` whose channel
    axis is ``axis`` (the last by default)."""
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def _wn_params(module: nn.Module, shape: tuple[int, ...]) -> jax.Array:
    """Creates (v, g) and returns the effective scale g / ||v|| per output unit."""
    v = module.param("v", _kaiming_normal, shape)
    flat = v.reshape(-1, shape[-1])
    g = module.param("g", lambda _k, _s: jnp.linalg.norm(flat, axis=0), (shape[-1],))
    return v, g * jax.lax.rsqrt(jnp.sum(flat * flat, axis=0))


class WNDense(nn.Module):
    """Weight-normalised linear layer; bias initialised as PyTorch does."""

    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        v, scale = _wn_params(self, (fan_in, self.features))
        y = (x @ v) * channel(scale, x.ndim)
        if self.use_bias:
            y = y + channel(self.param("bias", _torch_bias_init(fan_in), (self.features,)), x.ndim)
        return y


class WNConv(nn.Module):
    """Weight-normalised 2-D convolution on NHWC inputs (CNHW with ``channel_major``)."""

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    padding: str | Sequence[tuple[int, int]] = "SAME"
    use_bias: bool = False
    slices: bool = False  # prefer shifted slices + matmul on CPU (gtn_nas.nn.spatial)
    channel_major: bool = False  # CNHW input and output (always as slices), HWIO kernel

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        axis = 0 if self.channel_major else -1
        cin = x.shape[axis]
        v, scale = _wn_params(self, (kh, kw, cin, self.features))
        w = v * scale[None, None, None, :]  # the effective kernel, not a pass over activations
        if self.channel_major:
            y = conv2d_channel_major(x, w, self.strides, self.padding)
        else:
            y = conv2d(x, w, self.strides, self.padding, self.slices)
        if self.use_bias:
            bias = self.param("bias", _torch_bias_init(kh * kw * cin), (self.features,))
            y = y + channel(bias, y.ndim, axis)
        return y


# PyTorch's default Conv2d/Linear weight init (kaiming_uniform with a=sqrt(5)): U(+-1/sqrt(fan_in)).
torch_default_init = jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class PlainConv(nn.Module):
    """A 2-D convolution without weight norm, initialised as PyTorch does (NHWC, HWIO kernel):
    the NAS-Bench-201 benchmark's own layer, which zero-cost proxies are defined on."""

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    padding: str | Sequence[tuple[int, int]] = "SAME"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        w = self.param("kernel", torch_default_init, (kh, kw, x.shape[-1], self.features))
        return conv2d(x, w.astype(x.dtype), self.strides, self.padding)


class PlainDense(nn.Module):
    """A linear layer without weight norm, weight and bias initialised as PyTorch does."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        w = self.param("kernel", torch_default_init, (fan_in, self.features))
        b = self.param("bias", _torch_bias_init(fan_in), (self.features,))
        return x @ w.astype(x.dtype) + channel(b.astype(x.dtype), x.ndim)


def _reduce_axes(x: jax.Array) -> tuple[int, ...]:
    return tuple(range(x.ndim - 1))


class MeanOnlyBN(nn.Module):
    """Mean-only batch norm: subtract the batch mean, add a learned bias; no variance, no gamma.

    In train mode the batch mean is used and stored (momentum 0 by default); in eval mode the
    stored mean is subtracted, so a learner evaluated after T inner steps uses the statistics of
    its last training batch, exactly as the paper's learners do.
    """

    momentum: float = 0.0
    axis: int = -1  # the channel axis (0 for CNHW)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        axis = self.axis % x.ndim
        c = x.shape[axis]
        bias = self.param("bias", nn.initializers.zeros, (c,))
        stored = self.variable("batch_stats", "mean", jnp.zeros, (c,))
        if train:
            mean = jnp.mean(x, axis=tuple(a for a in range(x.ndim) if a != axis))
            if not self.is_initializing():
                stored.value = self.momentum * stored.value + (1.0 - self.momentum) * mean
        else:
            mean = stored.value
        return x - channel(mean, x.ndim, axis) + channel(bias, x.ndim, axis)


class BatchNorm(nn.Module):
    """Full batch norm (mean and variance, gamma and beta, eps 1e-5) with explicit stored stats.

    ``momentum=0`` is the NAS learners' setting inside a GTN; final real-data training uses the
    usual running averages (e.g. 0.9).
    """

    momentum: float = 0.0
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        stored_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,))
        stored_var = self.variable("batch_stats", "var", jnp.ones, (c,))
        if train:
            axes = _reduce_axes(x)
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - channel(mean, x.ndim)), axis=axes)
            if not self.is_initializing():
                m = self.momentum
                stored_mean.value = m * stored_mean.value + (1.0 - m) * mean
                stored_var.value = m * stored_var.value + (1.0 - m) * var
        else:
            mean, var = stored_mean.value, stored_var.value
        inv = channel(scale * jax.lax.rsqrt(var + self.epsilon), x.ndim)
        return (x - channel(mean, x.ndim)) * inv + channel(bias, x.ndim)


class BatchStatsNorm(nn.Module):
    """Batch norm that always uses the current batch's statistics (the generator's BN).

    Statistics are taken per group: the first ``group_axes`` axes index independent batches
    (e.g. the T inner steps of a curriculum generated in one call), the rest up to the channel
    axis are reduced, so each step's batch is normalised by its own statistics.
    """

    group_axes: int = 1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        axes = tuple(range(self.group_axes, x.ndim - 1))
        mean = jnp.mean(x, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * channel(scale, x.ndim) + channel(bias, x.ndim)
