"""Conditional generators G(z, y) -> images in (-2, 2), the normalised-data range.

Inputs carry a leading step axis: z is [T, B, noise_dim], y is [T, B, classes], and the batch
norm statistics are taken per step (over B), as the paper's generator sees one step's batch of
128 at a time. Generating all T batches in one call turns T small matmuls into one large one.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gtn_nas.errors import ConfigError
from gtn_nas.core.nn import BatchStatsNorm, WNConv, WNDense, leaky_relu

GENERATORS = ("conv", "mlp")


def _upsample2(x: jax.Array) -> jax.Array:
    """Nearest-neighbour x2 upsampling of [..., H, W, C]."""
    return jnp.repeat(jnp.repeat(x, 2, axis=-3), 2, axis=-2)


def _reflect_pad1(x: jax.Array) -> jax.Array:
    return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")


class ConvGenerator(nn.Module):
    """The paper's generator (gtn-spec 1.2): two WN dense layers then two upsample+conv blocks."""

    image_shape: tuple[int, int, int]
    hidden: int = 1024
    channels: tuple[int, int] = (128, 64)

    @nn.compact
    def __call__(self, z: jax.Array, y: jax.Array) -> jax.Array:
        h, w, c = self.image_shape
        lead = z.shape[:-1]  # (T, B)
        s = h // 4
        c0, c1 = self.channels
        x = jnp.concatenate([z, y], axis=-1)
        x = leaky_relu(BatchStatsNorm()(WNDense(self.hidden, use_bias=False)(x)))
        x = leaky_relu(BatchStatsNorm()(WNDense(c0 * s * s, use_bias=False)(x)))
        x = x.reshape(-1, s, s, c0)  # [T*B, s, s, c0]
        x = WNConv(c1, padding="VALID")(_reflect_pad1(_upsample2(x)))
        x = x.reshape(*lead, *x.shape[1:])
        x = leaky_relu(BatchStatsNorm()(x)).reshape(-1, *x.shape[len(lead):])
        x = WNConv(c, padding="VALID", use_bias=True)(_reflect_pad1(_upsample2(x)))
        x = x.reshape(*lead, *x.shape[1:])
        if x.shape[-3:] != (h, w, c):  # e.g. 28 -> 7 -> 28 is exact; other sizes are cropped
            x = x[..., :h, :w, :]
        return 2.0 * jnp.tanh(x)


class MLPGenerator(nn.Module):
    """A dense generator: a fraction of the conv generator's cost, for CPU meta-training."""

    image_shape: tuple[int, int, int]
    hidden: Sequence[int] = (512,)

    @nn.compact
    def __call__(self, z: jax.Array, y: jax.Array) -> jax.Array:
        h, w, c = self.image_shape
        x = jnp.concatenate([z, y], axis=-1)
        for units in self.hidden:
            x = leaky_relu(BatchStatsNorm()(WNDense(units, use_bias=False)(x)))
        x = WNDense(h * w * c)(x)
        return 2.0 * jnp.tanh(x).reshape(*x.shape[:-1], h, w, c)


def make_generator(name: str, image_shape: Sequence[int], hidden: int | None = None) -> nn.Module:
    shape = tuple(int(d) for d in image_shape)
    if name == "conv":
        return ConvGenerator(shape, hidden=hidden or 1024)  # type: ignore[arg-type]
    if name == "mlp":
        return MLPGenerator(shape, hidden=(hidden or 512,))  # type: ignore[arg-type]
    raise ConfigError(f"unknown generator {name!r}; choose one of {', '.join(GENERATORS)}")
