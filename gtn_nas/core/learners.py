"""Learners as pure (init, apply) function pairs, and the paper's fixed learner architectures.

The trainer only ever sees a ``Learner``: any Flax module whose ``__call__(x, train)`` returns
logits and keeps its normalisation statistics in ``batch_stats`` becomes one through
``learner_from_module``. Search spaces build such modules from genotypes; the GTN trainer never
imports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gtn_nas.errors import ConfigError
from gtn_nas.core.nn import MeanOnlyBN, WNConv, WNDense, leaky_relu
from gtn_nas.core.nn.spatial import channel_major, max_pool_3x3s2

Params = Any  # pytree of arrays
State = Any  # pytree of arrays (the batch_stats collection)


class Learner(NamedTuple):
    """A network as two pure functions.

    init(key) -> (params, state); apply(params, state, x, train) -> (logits, new_state).
    In eval mode (train=False) the returned state is the input state.
    """

    name: str
    init: Callable[[jax.Array], tuple[Params, State]]
    apply: Callable[[Params, State, jax.Array, bool], tuple[jax.Array, State]]


@dataclass(frozen=True)
class LearnerSource:
    """Where each outer step's learner comes from.

    ``build(arch)`` returns the Learner for an architecture encoding (None for a fixed learner),
    called inside the jitted meta-step, so an array ``arch`` lets every architecture share one
    compiled program; ``sample(key)`` draws the encoding for a step.
    """

    name: str
    build: Callable[[Any], Learner]
    sample: Callable[[jax.Array], Any] = lambda key: None


def fixed_source(learner: Learner) -> LearnerSource:
    return LearnerSource(learner.name, lambda arch: learner)


def learner_from_module(name: str, module: nn.Module, input_shape: Sequence[int]) -> Learner:
    """Wraps a Flax module taking ``(x, train)`` as a Learner for images of ``input_shape`` (HWC)."""
    # numpy, not jnp: a learner may be built while a jit traces (micro genotypes are built in the
    # meta-step) and cached; a jnp constant made then would be that trace's tracer, leaked.
    dummy = np.zeros((2, *input_shape), np.float32)

    def init(key: jax.Array) -> tuple[Params, State]:
        variables = module.init(key, dummy, train=True)
        return variables["params"], variables.get("batch_stats", {})

    def apply(params: Params, state: State, x: jax.Array, train: bool):
        variables = {"params": params, "batch_stats": state}
        if train:
            logits, updated = module.apply(variables, x, train=True, mutable=["batch_stats"])
            return logits, updated.get("batch_stats", {})
        return module.apply(variables, x, train=False), state

    return Learner(name, init, apply)


def _conv_layout() -> tuple[bool, int, tuple[int, int]]:
    """(channel-major?, channel axis, spatial axes) of the fixed conv learners' inner layout.

    Channel-major (CNHW) where their convolutions are slices (CPU): every convolution is then
    one [Cout, K] x [K, N*H*W] matmul whose gradients are plain row-major matmuls too, where NHWC
    made XLA transpose the skinny weight-gradient operands (the `base_fc` meta-step 2.63 ->
    1.86 s on 2 cores, benchmarks/RESULTS.md, Profile). The parameters are the same either way.
    """
    cm = channel_major()
    return cm, (0 if cm else -1), ((2, 3) if cm else (1, 2))


class BaseFC(nn.Module):
    """The paper's MNIST learner (`base_fc`): two conv+pool blocks, a 256-unit FC layer."""

    num_classes: int = 10
    widths: tuple[int, int, int] = (64, 128, 256)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c1, c2, fc = self.widths
        cm, axis, spatial = _conv_layout()
        if cm:
            x = jnp.transpose(x, (3, 0, 1, 2))
        for c in (c1, c2):
            x = WNConv(c, slices=True, channel_major=cm)(x)
            x = max_pool_3x3s2(x, slices=True, axes=spatial)  # slices on CPU, like the convs
            x = leaky_relu(MeanOnlyBN(axis=axis)(x, train))
        if cm:
            x = jnp.transpose(x, (1, 2, 3, 0))  # NHWC flattening: the same dense weights
        x = x.reshape(x.shape[0], -1)
        x = leaky_relu(MeanOnlyBN()(WNDense(fc)(x), train))
        return WNDense(self.num_classes)(x)


class BaseLarger2(nn.Module):
    """The paper's CIFAR-10 meta-training learner (`base_larger2`): 5 convs, global pooling."""

    num_classes: int = 10
    widths: tuple[int, int, int] = (64, 128, 256)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c1, c2, c3 = self.widths
        cm, axis, spatial = _conv_layout()
        if cm:
            x = jnp.transpose(x, (3, 0, 1, 2))
        for c, s in [(c1, 1), (c2, 2), (c2, 1), (c3, 2), (c3, 1)]:
            x = WNConv(c, strides=(s, s), slices=True, channel_major=cm)(x)
            x = leaky_relu(MeanOnlyBN(axis=axis)(x, train))
        x = jnp.mean(x, axis=spatial)
        if cm:
            x = x.T
        return WNDense(self.num_classes)(x)


class MLP(nn.Module):
    """Weight-normalised MLP with mean-only BN: the learner that is fast on a CPU."""

    num_classes: int = 10
    hidden: tuple[int, ...] = (256,)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for h in self.hidden:
            x = leaky_relu(MeanOnlyBN()(WNDense(h)(x), train))
        return WNDense(self.num_classes)(x)


FIXED_LEARNERS = ("base_fc", "base_larger2", "mlp", "linear")


def make_learner(name: str, input_shape: Sequence[int], num_classes: int = 10,
                 width: int | None = None) -> Learner:
    """Builds one of the fixed learners by name. ``width`` scales the hidden sizes when given."""
    if name == "base_fc":
        w = width or 64
        module = BaseFC(num_classes, (w, 2 * w, 4 * w))
    elif name == "base_larger2":
        w = width or 64
        module = BaseLarger2(num_classes, (w, 2 * w, 4 * w))
    elif name == "mlp":
        module = MLP(num_classes, (width or 256,))
    elif name == "linear":  # the official code's `linear` learner: 784-256-128-10
        module = MLP(num_classes, (256, 128))
    else:
        raise ConfigError(f"unknown learner {name!r}; choose one of {', '.join(FIXED_LEARNERS)}")
    return learner_from_module(name, module, input_shape)
