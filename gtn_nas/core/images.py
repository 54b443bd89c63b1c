"""Image preprocessing that runs on the accelerator, inside jitted code: normalisation, the
random crop (with or without a horizontal flip) and Cutout."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def normalize(images, mean, std) -> jax.Array:
    """uint8 [..., H, W, C] -> float32 normalised; cheap enough to run inside jitted code."""
    x = jnp.asarray(images, jnp.float32) / 255.0
    shape = (1,) * (x.ndim - 1) + (-1,)
    return (x - jnp.asarray(mean, jnp.float32).reshape(shape)) / jnp.asarray(std, jnp.float32).reshape(shape)


def random_crop(key: jax.Array, images: jax.Array, pad: int = 4, flip: bool = False) -> jax.Array:
    """Per image: a random crop of the zero-padded image, then (``flip``) a horizontal flip with
    probability 1/2. On raw pixels, so the padding is black as in torchvision."""
    n, h, w, c = images.shape
    k_x, k_y, k_f = jax.random.split(key, 3)
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ox = jax.random.randint(k_x, (n,), 0, 2 * pad + 1)
    oy = jax.random.randint(k_y, (n,), 0, 2 * pad + 1)
    crop = jax.vmap(lambda im, a, b: jax.lax.dynamic_slice(im, (a, b, 0), (h, w, c)))
    out = crop(padded, oy, ox)
    if not flip:
        return out
    flipped = jax.random.bernoulli(k_f, 0.5, (n,))[:, None, None, None]
    return jnp.where(flipped, out[:, :, ::-1], out)


def crop_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Crop (pad 4) and flip: the paper's CIFAR-10 meta-loss batches and final training."""
    return random_crop(key, images, 4, flip=True)


def cutout(key: jax.Array, x: jax.Array, size: int) -> jax.Array:
    """Zeroes a ``size`` square at a uniform random centre per image, clipped at the borders
    (DeVries & Taylor, as DARTS/NAO apply it: after normalisation, so the hole is the mean)."""
    n, h, w, _ = x.shape
    k_y, k_x = jax.random.split(key)
    cy = jax.random.randint(k_y, (n, 1, 1, 1), 0, h)
    cx = jax.random.randint(k_x, (n, 1, 1, 1), 0, w)
    rows = jnp.arange(h).reshape(1, h, 1, 1)
    cols = jnp.arange(w).reshape(1, 1, w, 1)
    half = size // 2
    hole = (rows >= cy - half) & (rows < cy + half) & (cols >= cx - half) & (cols < cx + half)
    return jnp.where(hole, 0.0, x)


__all__ = ["crop_flip", "cutout", "normalize", "random_crop"]
