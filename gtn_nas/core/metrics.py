"""Losses and accuracies, in one place: per batch inside jitted code, and over a whole split.

A split is scored in fixed chunks, the tail chunk padded and masked, so one compiled program
serves every split size; ``split_accuracy`` drives those chunks from the host (where a Python
loop costs nothing and keeps a convolutional network out of XLA:CPU's slow loops), and
``core.training.score`` runs the same chunks inside one program with ``lax.map``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def nll(logits: jax.Array, labels: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def count_correct(logits: jax.Array, labels: jax.Array, valid: jax.Array) -> jax.Array:
    """Correct predictions among the ``valid`` rows of a (padded) chunk."""
    return jnp.sum((jnp.argmax(logits, -1) == labels) & valid)


def pad_chunk(x, y, chunk: int):
    """(x, y, valid) of one chunk padded with zeros to ``chunk`` rows."""
    n = len(y)
    valid = np.arange(chunk) < n
    if n < chunk:
        x = np.concatenate([np.asarray(x), np.zeros((chunk - n, *x.shape[1:]), x.dtype)])
        y = np.concatenate([np.asarray(y), np.zeros((chunk - n,), y.dtype)])
    return x, y, valid


def split_accuracy(correct: Callable[..., jax.Array], images, labels, chunk: int) -> float:
    """Accuracy over a split: ``correct(x, y, valid)`` counted chunk by chunk from the host."""
    n = len(labels)
    total = 0
    for start in range(0, n, chunk):
        total += int(correct(*pad_chunk(images[start:start + chunk], labels[start:start + chunk],
                                        chunk)))
    return total / max(n, 1)


__all__ = ["accuracy", "count_correct", "nll", "pad_chunk", "split_accuracy"]
