"""The GTN paper's NAO/ENAS-style micro space (gtn-spec 3.1): a normal and a reduction cell.

Each cell has 5 nodes. Node i (0..4) reads two inputs from {0, 1: the cell's inputs (outputs of the
two previous cells), 2..i+1: nodes 0..i-1}, applies one op to each and adds the results. A cell is
encoded as 20 integers, (input_a, op_a, input_b, op_b) per node. Op numbering here is 0..10, the
official NAO "large" ids 5..15 minus 5 (``OPS``, ``to_official``/``from_official`` convert):

  0 identity   1 conv 1x1   2 conv 3x3   3 conv 1x3+3x1   4 conv 1x7+7x1
  5 max 2x2    6 max 3x3    7 max 5x5    8 avg 2x2        9 avg 3x3        10 avg 5x5

Semantics follow the official GTN code (enas_micro_models.py): both cell inputs are first
calibrated to the cell's C channels (FactorizedReduce when the first input has twice the
resolution, an act-conv1x1-BN when only channels differ); in a reduction cell, ops reading a cell
input use stride 2 (identity becomes a FactorizedReduce); the cell output concatenates every state
that no node reads, cell inputs included (a reduction cell passes an unused cell input through a
FactorizedReduce), so its width is C x (number of unused states). Conv ops are act -> WN conv ->
BN (the 1xk+kx1 op: two of those). Avg pools count padding (PyTorch's default, as NAO).

Macro skeleton (NASNetworkCIFAR): stem conv3x3 -> 3C + BN; 3N+2 cells, reduction cells at
indices N and 2N+1 doubling C; activation, global average pool, dropout, WN linear; optional
auxiliary head on the second reduction cell's output; drop-path on every op but a stride-1
identity (the official code meant this but tested the input id by mistake).

Differences from the official code, on purpose: WN gains start at ||v|| (the official net re-ran
Kaiming init on them, gtn-spec 1.6); the activation before a calibrating FactorizedReduce is
applied once, not twice. Search-time size: C=32, N=3 (gtn-spec 3.1).

No shared-program encoding: unlike NB201's fixed edge set, which states a node reads and which
states are concatenated change the cell's wiring and its output width (C x #unused), so every
genotype has its own parameter shapes; a supernet would need all 2 x 11 op choices for every
(node, input) pair plus masked concatenation to the maximal width and input-dependent
calibration, roughly 30x the work of one network.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gtn_nas.errors import ArchitectureError, ConfigError
from gtn_nas.core.nn import BatchNorm, WNConv, WNDense

from search_spaces.base import InputShape, SearchSpace, SizeDefaults, check_input_shape
from search_spaces.ops import (
    ActConvBN, AuxHead, FactorizedConvBN, FactorizedReduce, drop_path, get_activation, pool,
    same_padding,
)

OPS: tuple[str, ...] = (
    "identity", "conv_1x1", "conv_3x3", "conv_1x3_3x1", "conv_1x7_7x1",
    "max_pool_2x2", "max_pool_3x3", "max_pool_5x5", "avg_pool_2x2", "avg_pool_3x3",
    "avg_pool_5x5",
)
OFFICIAL_OP_OFFSET = 5  # official NAO/GTN op id = our op index + 5
NUM_NODES = 5
CELL_LEN = 4 * NUM_NODES
IDENTITY = 0

EXAMPLE = ("normal: 0 2 1 3, 1 1 2 9, 0 0 3 6, 2 4 1 8, 4 2 5 0 | "
           "reduce: 0 5 1 2, 2 0 1 9, 0 3 2 7, 3 1 0 10, 1 6 4 4")


def _error(problem: str, s: str | None = None) -> ArchitectureError:
    where = f" in {s!r}" if s is not None else ""
    ops = ", ".join(f"{k}={o}" for k, o in enumerate(OPS))
    return ArchitectureError(
        f"{problem}{where}; a cell is 5 nodes of 'input_a op_a input_b op_b', node i reading "
        f"inputs 0..i+1 and ops 0..{len(OPS) - 1} ({ops}); example: {EXAMPLE}")


def _check_cell(cell: tuple[int, ...], kind: str, s: str | None = None) -> None:
    if len(cell) != CELL_LEN:
        raise _error(f"the {kind} cell has {len(cell)} integers, needs {CELL_LEN}", s)
    for node in range(NUM_NODES):
        for slot in range(2):
            inp, op = cell[4 * node + 2 * slot], cell[4 * node + 2 * slot + 1]
            name = f"{kind} node {node} input {'ab'[slot]}"
            if not 0 <= inp <= node + 1:
                raise _error(f"{name} is {inp}, but node {node} may read only 0..{node + 1}", s)
            if not 0 <= op < len(OPS):
                raise _error(f"{name} has op {op}, ops are 0..{len(OPS) - 1}", s)


def _cell_str(cell: tuple[int, ...]) -> str:
    return ", ".join(" ".join(str(v) for v in cell[4 * i:4 * i + 4]) for i in range(NUM_NODES))


@dataclass(frozen=True)
class MicroGenotype:
    """A normal and a reduction cell, 20 integers each (see the module docstring)."""

    normal: tuple[int, ...]
    reduce: tuple[int, ...]

    def __post_init__(self):
        for kind in ("normal", "reduce"):
            cell = tuple(int(v) for v in getattr(self, kind))
            object.__setattr__(self, kind, cell)
            _check_cell(cell, kind)

    def to_str(self) -> str:
        """``normal: a b c d, ... (5 nodes) | reduce: ...``; ``from_str`` also takes the integers
        without commas."""
        return f"normal: {_cell_str(self.normal)} | reduce: {_cell_str(self.reduce)}"

    @classmethod
    def from_str(cls, s: str) -> "MicroGenotype":
        if not isinstance(s, str):
            raise _error(f"expected a string, got {type(s).__name__}")
        m = re.fullmatch(r"\s*normal\s*[:=]\s*(.*?)\s*\|\s*reduce\s*[:=]\s*(.*?)\s*", s, re.S)
        if m is None:
            raise _error("expected 'normal: <20 integers> | reduce: <20 integers>'", s)
        cells = []
        for kind, body in zip(("normal", "reduce"), m.groups()):
            tokens = [t for t in re.split(r"[\s,\[\]]+", body) if t]
            for t in tokens:
                if not re.fullmatch(r"[0-9]+", t):  # ASCII: \d takes other scripts' digits
                    raise _error(f"{kind} cell: {t!r} is not a non-negative integer", s)
            cell = tuple(int(t) for t in tokens)
            _check_cell(cell, kind, s)
            cells.append(cell)
        return cls(*cells)

    def to_official(self) -> tuple[list[int], list[int]]:
        """The official GTN/NAO encoding (op ids 5..15), e.g. for its ``dag`` JSON."""
        normal, reduce = ([v + OFFICIAL_OP_OFFSET if k % 2 else v for k, v in enumerate(c)]
                          for c in (self.normal, self.reduce))
        return normal, reduce

    @classmethod
    def from_official(cls, normal: Sequence[int], reduce: Sequence[int]) -> "MicroGenotype":
        conv = lambda c: tuple(v - OFFICIAL_OP_OFFSET if k % 2 else v for k, v in enumerate(c))
        return cls(conv(normal), conv(reduce))

    def describe(self) -> str:
        """Human-readable node list, e.g. 'normal n0 = conv_3x3(in0) + identity(in1); ...'."""
        def src(i: int) -> str:
            return f"in{i}" if i < 2 else f"n{i - 2}"

        parts = []
        for kind in ("normal", "reduce"):
            c = getattr(self, kind)
            nodes = [f"n{i} = {OPS[c[4 * i + 1]]}({src(c[4 * i])}) + "
                     f"{OPS[c[4 * i + 3]]}({src(c[4 * i + 2])})" for i in range(NUM_NODES)]
            parts.append(f"{kind}: " + "; ".join(nodes))
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.to_str()


def _slot_ranges() -> np.ndarray:
    """Number of choices of each of a cell's 20 integers: node i's inputs i+2, ops 11."""
    return np.array([n for i in range(NUM_NODES) for n in (i + 2, len(OPS), i + 2, len(OPS))])


# ---------------------------------------------------------------------------------------------
# Modules


class MicroOp(nn.Module):
    """One of the 11 ops at a given stride (2 when a reduction cell reads a cell input)."""

    op: int
    channels: int
    stride: int = 1
    act: str = "leaky_relu"
    bn_momentum: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c, s, act, mom = self.channels, self.stride, self.act, self.bn_momentum
        name = OPS[self.op]
        if name == "identity":
            return x if s == 1 else FactorizedReduce(c, act, mom, name="reduce")(x, train)
        if name in ("conv_1x1", "conv_3x3"):
            k = 1 if name == "conv_1x1" else 3
            return ActConvBN(c, (k, k), (s, s), same_padding(k), act, mom, name="conv")(x, train)
        if name in ("conv_1x3_3x1", "conv_1x7_7x1"):
            k = 3 if name == "conv_1x3_3x1" else 7
            return FactorizedConvBN(c, k, s, act, mom, name="conv")(x, train)
        kind, window = name.split("_")[0], int(name[-1])
        return pool(x, kind, window, s, count_include_pad=True)


class MicroCell(nn.Module):
    """A normal or reduction cell of C channels per node; output C x (number of unused states)."""

    arch: tuple[int, ...]
    channels: int
    reduction: bool = False
    act: str = "leaky_relu"
    bn_momentum: float = 0.0

    @nn.compact
    def __call__(self, s0: jax.Array, s1: jax.Array, train: bool,
                 drop_rate: jax.Array | float | None = None) -> jax.Array:
        c, act, mom = self.channels, self.act, self.bn_momentum
        if s0.shape[1:3] != s1.shape[1:3]:  # s0 comes from before a reduction cell
            s0 = FactorizedReduce(c, act, mom, name="calibrate_0")(s0, train)
        elif s0.shape[-1] != c:
            s0 = ActConvBN(c, (1, 1), padding=same_padding(1), act=act, bn_momentum=mom,
                           name="calibrate_0")(s0, train)
        if s1.shape[-1] != c:
            s1 = ActConvBN(c, (1, 1), padding=same_padding(1), act=act, bn_momentum=mom,
                           name="calibrate_1")(s1, train)
        states, used = [s0, s1], [False] * (NUM_NODES + 2)
        for i in range(NUM_NODES):
            total = None
            for slot in range(2):
                inp, op = self.arch[4 * i + 2 * slot], self.arch[4 * i + 2 * slot + 1]
                stride = 2 if self.reduction and inp < 2 else 1
                y = MicroOp(op, c, stride, act, mom, name=f"node{i}_{'ab'[slot]}")(
                    states[inp], train)
                if drop_rate is not None and not (op == IDENTITY and stride == 1):
                    y = drop_path(self, y, drop_rate)
                used[inp] = True
                total = y if total is None else total + y
            states.append(total)
        out_hw = states[-1].shape[1:3]
        outs = []
        for k, state in enumerate(states):
            if used[k]:
                continue
            if state.shape[1:3] != out_hw:  # an unused input of a reduction cell
                state = FactorizedReduce(c, act, mom, name=f"combine_{k}")(state, train)
            outs.append(state)
        return jnp.concatenate(outs, axis=-1)


class MicroNetwork(nn.Module):
    """NASNetworkCIFAR: ``__call__(x, train, drop_path_scale=1.0)`` (see search_spaces.base)."""

    normal: tuple[int, ...]
    reduce: tuple[int, ...]
    channels: int = 32
    cells: int = 3
    num_classes: int = 10
    bn_momentum: float = 0.0
    drop_path: float = 0.0
    auxiliary: bool = False
    activation: str = "leaky_relu"
    dropout: float = 0.0  # before the classifier; NAO's final training uses 0.4 (keep 0.6)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, drop_path_scale=1.0):
        n, act, mom = self.cells, self.activation, self.bn_momentum
        x = WNConv(3 * self.channels, (3, 3), padding=same_padding(3), name="stem_conv")(x)
        s0 = s1 = BatchNorm(mom, name="stem_bn")(x, train)
        total, reductions = 3 * n + 2, (n, 2 * n + 1)
        c, aux = self.channels, None
        for i in range(total):
            reduction = i in reductions
            c = 2 * c if reduction else c
            rate = (self.drop_path * drop_path_scale * (i + 1) / total
                    if train and self.drop_path > 0 else None)
            cell = MicroCell(self.reduce if reduction else self.normal, c, reduction, act, mom,
                             name=f"cell_{i}")
            s0, s1 = s1, cell(s0, s1, train, rate)
            if i == reductions[-1] and self.auxiliary and (train or self.is_initializing()):
                aux = AuxHead(self.num_classes, act, mom, name="aux_head")(s1, train)
        x = jnp.mean(get_activation(act)(s1), axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train or self.dropout == 0)(x)
        logits = WNDense(self.num_classes, name="classifier")(x)
        return (logits, aux) if self.auxiliary and train else logits


# ---------------------------------------------------------------------------------------------
# Space


class MicroSpace(SearchSpace):
    """The micro space: about 1.3e16 encodings per cell, 1.8e32 (normal, reduce) pairs."""

    name = "micro"
    defaults = SizeDefaults(channels=32, cells=3)  # the paper's search-time C=32, N=3
    example = EXAMPLE

    @property
    def size(self) -> int:
        return math.prod(int(n) for n in _slot_ranges()) ** 2

    def sample(self, key: jax.Array) -> MicroGenotype:
        """Every input and op uniform and independent, as the official ``make_random_cell``."""
        ranges = jnp.asarray(_slot_ranges())
        k_normal, k_reduce = jax.random.split(key)
        draw = lambda k: tuple(int(v) for v in np.asarray(
            jax.random.randint(k, (CELL_LEN,), 0, ranges)))
        return MicroGenotype(draw(k_normal), draw(k_reduce))

    def from_str(self, s: str) -> MicroGenotype:
        return MicroGenotype.from_str(s)

    def enumerate(self) -> Iterator[MicroGenotype]:
        raise ArchitectureError(
            f"the micro space holds about {self.size:.1e} genotypes and cannot be enumerated; "
            f"sample it instead")

    def mutate(self, genotype: MicroGenotype, key: jax.Array) -> MicroGenotype:
        """Changes one of the 40 integers (uniformly chosen) to a different valid value."""
        k_pos, k_val = jax.random.split(key)
        pos = int(jax.random.randint(k_pos, (), 0, 2 * CELL_LEN))
        kind, k = ("normal", pos) if pos < CELL_LEN else ("reduce", pos - CELL_LEN)
        n = int(_slot_ranges()[k])
        cell = list(getattr(genotype, kind))
        cell[k] = (cell[k] + int(jax.random.randint(k_val, (), 1, n))) % n
        return MicroGenotype(**{**{"normal": genotype.normal, "reduce": genotype.reduce},
                                kind: tuple(cell)})

    def build(self, genotype: MicroGenotype | str, channels: int | None = None,
              cells: int | None = None, num_classes: int = 10,
              input_shape: InputShape = (32, 32, 3), *, bn_momentum: float = 0.0,
              drop_path: float = 0.0, auxiliary: bool = False, activation: str = "leaky_relu",
              dropout: float = 0.0) -> MicroNetwork:
        if isinstance(genotype, str):
            genotype = self.from_str(genotype)
        if not isinstance(genotype, MicroGenotype):
            raise ArchitectureError(f"expected a MicroGenotype, got {type(genotype).__name__}")
        channels = self.defaults.channels if channels is None else channels
        cells = self.defaults.cells if cells is None else cells
        for label, v in (("channels", channels), ("cells", cells), ("num_classes", num_classes)):
            if int(v) != v or v < 1:
                raise ConfigError(f"{label} must be a positive integer, got {v!r}")
        check_input_shape(input_shape)
        get_activation(activation)
        for label, v in (("drop_path", drop_path), ("dropout", dropout)):
            if not 0.0 <= v < 1.0:
                raise ConfigError(f"{label} must be in [0, 1), got {v}")
        return MicroNetwork(normal=genotype.normal, reduce=genotype.reduce,
                            channels=int(channels), cells=int(cells),
                            num_classes=int(num_classes), bn_momentum=float(bn_momentum),
                            drop_path=float(drop_path), auxiliary=bool(auxiliary),
                            activation=activation, dropout=float(dropout))
