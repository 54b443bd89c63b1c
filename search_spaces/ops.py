"""Operations shared by the cell search spaces, as Flax modules taking ``(x, train)`` on NHWC.

Every convolution is a weight-normalised ``WNConv`` (no bias) and every norm is the full
``gtn_nas.core.nn.BatchNorm`` with an explicit ``bn_momentum`` (0 inside a GTN: the stored statistics
are those of the last train-mode batch, gtn-spec 1.6). ``layers="benchmark"`` builds the layers the
NAS-Bench-201 benchmark itself trained instead (plain convolutions and linear layer, PyTorch's
default init), on which zero-cost proxies are defined; ``"benchmark_nobn"`` also drops every norm
(synflow's network). ``"gtn_meta"`` is ``"gtn"`` (the same parameters and function) with its
convolutions computed as shifted slices and a matmul on CPU (``gtn_nas.core.nn.spatial``): in the
second-order meta-step XLA:CPU's weight-gradient convolutions took two thirds of the NB201
learner's time, and slices halved the step (benchmarks/RESULTS.md, Profile), where a first-order
search step runs faster on XLA's op (``"gtn"``). Every activation that starts an act-conv-BN op,
and the last one, ``sow`` their input into the ``relu_inputs`` collection (a no-op unless it is
mutable: NASWOT reads it). The activation is a field naming an entry of
``ACTIVATIONS``: GTN-taught learners use LeakyReLU(0.1) (the default, gtn-spec 1.5/1.6), while the
NAS-Bench-201 benchmark itself trained with ReLU.

Pooling conventions (chosen to match the code each space comes from):
* 2x2 pools zero-pad one row and one column at the bottom/right, then pool without padding, as the
  official micro-space code does (``F.pad(x, [0, 1, 0, 1])``), so a max pool sees those zeros.
* 3x3 and 5x5 pools pad symmetrically by ``k // 2``; max pools ignore the padding (PyTorch pads
  with -inf); avg pools count the padding or not according to ``count_include_pad``:
  NAS-Bench-201 uses ``count_include_pad=False``, the micro space PyTorch's default (True).
Every stride-2 op maps a side of n pixels to ceil(n / 2), so odd sizes (28 -> 14 -> 7 -> 4) work.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from gtn_nas.errors import ConfigError
from gtn_nas.core.nn import BatchNorm, PlainConv, PlainDense, WNConv, WNDense, leaky_relu

Padding = tuple[tuple[int, int], tuple[int, int]]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "leaky_relu": leaky_relu,  # LeakyReLU(0.1): the GTN learners' activation
    "relu": jax.nn.relu,  # the NAS-Bench-201 benchmark's activation
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Looks up an activation by name (module fields hold names so modules stay hashable)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None


LAYERS = ("gtn", "gtn_meta", "benchmark", "benchmark_nobn")
GTN_LAYERS = ("gtn", "gtn_meta")  # weight-normalised layers: what a GTN teaches


def check_layers(layers: str) -> str:
    if layers not in LAYERS:
        raise ConfigError(f"unknown layers {layers!r}; choose one of {', '.join(LAYERS)}")
    return layers


def conv(layers: str, features: int, kernel_size: tuple[int, int], strides=(1, 1),
         padding: Padding | str = "SAME", name: str | None = None) -> nn.Module:
    """The convolution of ``layers``: weight-normalised (GTN learners) or plain (the benchmark)."""
    if layers in GTN_LAYERS:
        return WNConv(features, kernel_size, strides, padding, slices=layers == "gtn_meta",
                      name=name)
    return PlainConv(features, kernel_size, strides, padding, name=name)


def dense(layers: str, features: int, name: str | None = None) -> nn.Module:
    return WNDense(features, name=name) if layers in GTN_LAYERS else PlainDense(features, name=name)


def norm(layers: str, momentum: float, name: str, x: jax.Array, train: bool) -> jax.Array:
    """BN of ``x`` (created under ``name`` in the calling module), or ``x`` without norms."""
    if layers == "benchmark_nobn":
        return x
    return BatchNorm(momentum, name=name)(x, train)


def sow_relu_input(module: nn.Module, name: str, x: jax.Array) -> None:
    """Records an activation's input in ``relu_inputs`` when that collection is mutable (not at
    init, so no variables hold activations)."""
    if not module.is_initializing():
        module.sow("relu_inputs", name, x)


FEATURE_MAPS = "feature_maps"


def sow_feature(module: nn.Module, x: jax.Array, count: int = 1) -> None:
    """Records a feature map in ``feature_maps`` (when that collection is mutable) with the
    number of PyTorch modules of the NB201 reference network that return it: MeCo's official code
    hooks every module, so a map counts once per module that returns it (a ReLUConvBN's BN output
    three times: BN, its Sequential, ReLUConvBN). ``gtn_nas.search.zero_cost.feature_maps`` reads
    them."""
    if not module.is_initializing():
        module.sow(FEATURE_MAPS, f"x{count}", x)


def feature_count(name: str) -> int:
    """The multiplicity ``sow_feature`` encoded in a ``feature_maps`` entry's name."""
    return int(name[1:])


def same_padding(kh: int, kw: int | None = None) -> Padding:
    """PyTorch-style symmetric padding ``k // 2`` for odd kernels."""
    kw = kh if kw is None else kw
    return ((kh // 2, kh // 2), (kw // 2, kw // 2))


class ActConvBN(nn.Module):
    """activation -> WN conv -> BN: NB201's ReLUConvBN and the micro space's conv ops."""

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    padding: Padding = ((1, 1), (1, 1))
    act: str = "leaky_relu"
    bn_momentum: float = 0.0
    layers: str = "gtn"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        sow_relu_input(self, "x", x)
        x = get_activation(self.act)(x)
        sow_feature(self, x)
        x = conv(self.layers, self.features, self.kernel_size, self.strides, self.padding,
                 name="conv")(x)
        sow_feature(self, x)
        x = norm(self.layers, self.bn_momentum, "bn", x, train)
        sow_feature(self, x, 3)  # BN, the op's Sequential, ReLUConvBN
        return x


class FactorizedConvBN(nn.Module):
    """1xk conv then kx1 conv, each act -> WN conv -> BN (the micro space's conv 1x3+3x1, 1x7+7x1).

    The stride acts on the width in the first conv and on the height in the second, as in NAO.
    """

    features: int
    k: int
    stride: int = 1
    act: str = "leaky_relu"
    bn_momentum: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        p, s = self.k // 2, self.stride
        x = ActConvBN(self.features, (1, self.k), (1, s), ((0, 0), (p, p)), self.act,
                      self.bn_momentum, name="conv_1xk")(x, train)
        return ActConvBN(self.features, (self.k, 1), (s, 1), ((p, p), (0, 0)), self.act,
                         self.bn_momentum, name="conv_kx1")(x, train)


def pool(x: jax.Array, kind: str, window: int, stride: int = 1,
         count_include_pad: bool = True) -> jax.Array:
    """Max or average pooling with the padding conventions of the module docstring."""
    if window == 2:
        x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        padding: Padding = ((0, 0), (0, 0))
    else:
        padding = same_padding(window)
    if kind == "max":
        return nn.max_pool(x, (window, window), (stride, stride), padding)
    if kind == "avg":
        return nn.avg_pool(x, (window, window), (stride, stride), padding,
                           count_include_pad=count_include_pad)
    raise ValueError(f"unknown pool kind {kind!r}")


def zero(x: jax.Array, stride: int = 1) -> jax.Array:
    """The 'none' op: zeros of the output shape (no dependence on x, so no gradient)."""
    return jnp.zeros_like(x[:, ::stride, ::stride, :])


def identity(x: jax.Array) -> jax.Array:
    return x


class FactorizedReduce(nn.Module):
    """Halves the resolution without dropping pixels: two 1x1 stride-2 convs, one on x and one on
    x shifted by one pixel, concatenated, then BN (NAO/DARTS). The shift pads at the bottom/right
    first so both paths give ceil(n / 2) on odd sizes too. Odd ``features`` are allowed.
    """

    features: int
    act: str = "leaky_relu"
    bn_momentum: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = get_activation(self.act)(x)
        half = self.features // 2
        shifted = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))[:, 1:, 1:, :]
        a = WNConv(half, (1, 1), (2, 2), "VALID", name="path_a")(x)
        b = WNConv(self.features - half, (1, 1), (2, 2), "VALID", name="path_b")(shifted)
        return BatchNorm(self.bn_momentum, name="bn")(jnp.concatenate([a, b], axis=-1), train)


class ResidualReduction(nn.Module):
    """NAS-Bench-201's reduction block: a ResNet basic block with stride 2.

    out = conv_b(conv_a(x)) + conv1x1(avgpool2x2(x)), conv_a/b being act-conv3x3-BN and the
    shortcut having no norm, as in the benchmark. The 2x2 pool pads odd sides at the bottom/right
    (not counted) so the shortcut matches the conv path's ceil(n / 2).
    """

    features: int
    act: str = "leaky_relu"
    bn_momentum: float = 0.0
    layers: str = "gtn"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = ActConvBN(self.features, (3, 3), (2, 2), same_padding(3), self.act, self.bn_momentum,
                      self.layers, name="conv_a")(x, train)
        y = ActConvBN(self.features, (3, 3), (1, 1), same_padding(3), self.act, self.bn_momentum,
                      self.layers, name="conv_b")(y, train)
        h, w = x.shape[1:3]
        shortcut = nn.avg_pool(x, (2, 2), (2, 2), ((0, h % 2), (0, w % 2)),
                               count_include_pad=False)
        sow_feature(self, shortcut)
        shortcut = conv(self.layers, self.features, (1, 1), padding="VALID",
                        name="shortcut")(shortcut)
        sow_feature(self, shortcut, 2)  # the conv and its Sequential
        out = shortcut + y
        sow_feature(self, out)
        return out


class AuxHead(nn.Module):
    """Auxiliary classifier (NAO/DARTS AuxHeadCIFAR): act, avgpool 5/3, conv1x1 128, BN, act,
    conv2x2 768, BN, act, linear.

    The original assumes an 8x8 input (32x32 images after two reductions). To accept any size the
    pool is skipped below 5x5, the second conv's kernel shrinks to the remaining size when it is
    below 2, and a global average pool precedes the linear layer (a no-op at 8x8).
    """

    num_classes: int
    act: str = "leaky_relu"
    bn_momentum: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        act = get_activation(self.act)
        x = act(x)
        if min(x.shape[1:3]) >= 5:
            x = nn.avg_pool(x, (5, 5), (3, 3), "VALID")
        x = WNConv(128, (1, 1), padding="VALID", name="conv1")(x)
        x = act(BatchNorm(self.bn_momentum, name="bn1")(x, train))
        k = (min(2, x.shape[1]), min(2, x.shape[2]))
        x = WNConv(768, k, padding="VALID", name="conv2")(x)
        x = act(BatchNorm(self.bn_momentum, name="bn2")(x, train))
        return WNDense(self.num_classes, name="classifier")(jnp.mean(x, axis=(1, 2)))


def drop_path(module: nn.Module, x: jax.Array, rate: jax.Array | float) -> jax.Array:
    """Zeroes whole samples of an op's output with probability ``rate`` and rescales the rest.

    ``rate`` may be a traced scalar, so a schedule over training steps needs no recompilation.
    Draws from the module's 'dropout' stream.
    """
    keep = 1.0 - rate
    mask = jax.random.bernoulli(module.make_rng("dropout"), keep, (x.shape[0], 1, 1, 1))
    return x * (mask.astype(x.dtype) / keep)

