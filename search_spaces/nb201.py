"""NAS-Bench-201 (NATS-Bench topology) cell space: 4 nodes, 6 edges, 5 ops, 15,625 cells.

Node 0 is the cell input; node j = sum over i < j of op_{j<-i}(node i); the cell output is node 3.
The genotype lists the 6 edge ops in the benchmark's string order
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``, i.e. edges (1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2).

Macro skeleton (the benchmark's): stem conv3x3 -> C + BN; three stages of N cells at C, 2C, 4C
channels, separated by stride-2 residual reduction blocks; BN, activation, global average pool,
WN linear. Convs are WN, norms full BN (``bn_momentum``), activation LeakyReLU(0.1) by default
(``activation="relu"`` gives the benchmark's own).

Shared program. ``build_shared`` returns one supernet whose ``__call__(x, arch, train)`` takes the
op indices ``arch`` (int32 [6], see ``encode``) as an array that may be traced, so every
architecture runs in one compiled program (and several can be vmapped together). In the default
``mode="onehot"`` every edge computes all candidate ops and sums them weighted by
``one_hot(arch)``: the output is exactly the chosen network's (the other terms are exactly 0) and
unused ops' parameters get exactly zero gradient. The price is computing every op. Measured for
one SGD step, batch 64: at C=16, N=1 on 28x28x1, XLA:CPU (2 cores) compiles an exact network in
3-4 s and steps in 160-370 ms, the supernet compiles once in 12 s and steps in 630 ms, so
per-architecture compilation wins beyond about 10 steps per architecture there; on an H100,
exact 3-5 s / 2-5 ms against shared 6 s / 6 ms, and at C=16, N=5 on 32x32x3 exact 6-12 s /
8-25 ms against shared 29 s / 52-57 ms. ``mode="switch"`` runs only the chosen op per edge through
``lax.switch``; for one first-order SGD step it measured 1.4-7x slower than onehot on XLA:CPU
and 0.8-1.2x on an H100, with longer compiles, so the search's shared program keeps onehot. For
meta-training's second-order unroll it is the other way round (2.7x faster on 2 cores over six
architectures, benchmarks/RESULTS.md, Profile), so meta-training uses switch
(``search_spaces/sources.py``).

Parameter paths coincide with the exact module's (``cell_s_n/edge_j_i/<op>/...``), so
``subnet_variables`` extracts an exact network's variables, and an exact module initialised with
the same key has the same values as the supernet's used ops.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from gtn_nas.core.cost import count_params
from gtn_nas.errors import ArchitectureError, ConfigError
from gtn_nas.core.learners import Learner

from search_spaces.base import (
    InputShape, SearchSpace, SizeDefaults, check_input_shape,
)
from search_spaces.ops import (
    ActConvBN, AuxHead, ResidualReduction, check_layers, conv, dense, drop_path, get_activation,
    norm, pool, same_padding, sow_feature, sow_relu_input, zero,
)

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from)
NUM_EDGES, NUM_OPS = len(EDGES), len(OPS)
EXAMPLE = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
           "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")


def _error(problem: str, s: str | None = None) -> ArchitectureError:
    where = f" in {s!r}" if s is not None else ""
    return ArchitectureError(
        f"{problem}{where}; ops are {', '.join(OPS)}; example: {EXAMPLE}")


@dataclass(frozen=True)
class NB201Genotype:
    """The 6 edge ops of an NB201 cell, in string order (see ``EDGES``)."""

    ops: tuple[str, ...]

    def __post_init__(self):
        ops = tuple(self.ops)
        object.__setattr__(self, "ops", ops)
        if len(ops) != NUM_EDGES:
            raise _error(f"an NB201 cell has {NUM_EDGES} edges, got {len(ops)} ops {ops!r}")
        for op in ops:
            if op not in OPS:
                raise _error(f"unknown op {op!r}")

    def op(self, to: int, frm: int) -> str:
        """The op on the edge from node ``frm`` to node ``to``."""
        return self.ops[EDGES.index((to, frm))]

    def to_str(self) -> str:
        groups = ("|" + "|".join(f"{self.op(j, i)}~{i}" for i in range(j)) + "|"
                  for j in (1, 2, 3))
        return "+".join(groups)

    @classmethod
    def from_str(cls, s: str) -> "NB201Genotype":
        if not isinstance(s, str):
            raise _error(f"expected a string, got {type(s).__name__}")
        groups = s.strip().split("+")
        if len(groups) != 3:
            raise _error(f"expected 3 node groups separated by '+', got {len(groups)}", s)
        ops = []
        for j, group in enumerate(groups, start=1):
            g = group.strip()
            if len(g) < 2 or not (g.startswith("|") and g.endswith("|")):
                raise _error(f"node {j}'s group {g!r} must start and end with '|'", s)
            tokens = g[1:-1].split("|")
            if len(tokens) != j:
                raise _error(f"node {j} lists {len(tokens)} input edges, needs {j} "
                             f"(one from each earlier node)", s)
            for i, token in enumerate(tokens):
                op, sep, src = token.partition("~")
                if not sep or not re.fullmatch(r"[0-9]+", src):  # ASCII: int() refuses '²'
                    raise _error(f"bad token {token!r}: tokens are 'op~input'", s)
                if int(src) != i:
                    raise _error(f"token {token!r} of node {j} should read from node {i} "
                                 f"(inputs are listed in order 0..{j - 1})", s)
                if op not in OPS:
                    raise _error(f"unknown op {op!r}", s)
                ops.append(op)
        return cls(tuple(ops))

    def __str__(self) -> str:
        return self.to_str()


def encode(genotype: NB201Genotype) -> np.ndarray:
    """Op indices (into ``OPS``) of the 6 edges: int32 [6], the shared module's ``arch``."""
    return np.array([OPS.index(op) for op in genotype.ops], np.int32)


def decode(arch: Sequence[int] | np.ndarray) -> NB201Genotype:
    """Inverse of ``encode`` (a concrete array)."""
    idx = [int(a) for a in np.asarray(arch).reshape(-1)]
    if len(idx) != NUM_EDGES or not all(0 <= a < NUM_OPS for a in idx):
        raise _error(f"arch must be {NUM_EDGES} op indices in 0..{NUM_OPS - 1}, got {idx}")
    return NB201Genotype(tuple(OPS[a] for a in idx))


# ---------------------------------------------------------------------------------------------
# Modules


class NB201Edge(nn.Module):
    """One edge: a single op (exact network) or the one-hot-weighted sum of candidates (shared).

    Parameterised ops are submodules named after the op, so an exact network's parameter paths are
    a subset of the supernet's. 'none' is never computed: it contributes exactly zero.
    """

    candidates: tuple[str, ...]
    channels: int
    act: str = "leaky_relu"
    bn_momentum: float = 0.0
    layers: str = "gtn"

    def _op(self, op: str, x: jax.Array, train: bool) -> jax.Array:
        if op == "skip_connect":
            sow_feature(self, x)  # Identity
            return x
        if op == "avg_pool_3x3":
            y = pool(x, "avg", 3, 1, count_include_pad=False)  # as the benchmark's POOLING
            sow_feature(self, y, 2)  # AvgPool2d and POOLING
            return y
        if op == "nor_conv_1x1":
            return ActConvBN(self.channels, (1, 1), (1, 1), same_padding(1), self.act,
                             self.bn_momentum, self.layers, name=op)(x, train)
        if op == "nor_conv_3x3":
            return ActConvBN(self.channels, (3, 3), (1, 1), same_padding(3), self.act,
                             self.bn_momentum, self.layers, name=op)(x, train)
        return zero(x)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, weights: jax.Array | None = None) -> jax.Array:
        if weights is None:  # exact network: one op
            (op,) = self.candidates
            return self._op(op, x, train)
        out = jnp.zeros_like(x)
        for op in self.candidates:
            if op != "none":
                out = out + weights[OPS.index(op)] * self._op(op, x, train)
        return out


class NB201SwitchEdge(nn.Module):
    """A shared edge that runs only the chosen op, via ``lax.switch`` on a (traced) op index.

    Same parameters and paths as ``NB201Edge`` with all candidates; every op is created at init.
    Only the chosen branch executes (unless the index is batched by ``vmap``, which turns the
    switch into a select over all branches); the others get exactly zero gradient and keep their
    stored BN statistics.
    """

    channels: int
    act: str = "leaky_relu"
    bn_momentum: float = 0.0
    layers: str = "gtn"

    def setup(self):
        self.nor_conv_1x1 = ActConvBN(self.channels, (1, 1), (1, 1), same_padding(1), self.act,
                                      self.bn_momentum, self.layers)
        self.nor_conv_3x3 = ActConvBN(self.channels, (3, 3), (1, 1), same_padding(3), self.act,
                                      self.bn_momentum, self.layers)

    def __call__(self, x: jax.Array, train: bool, index: jax.Array) -> jax.Array:
        branches = [  # in OPS order
            lambda mdl, x: zero(x),
            lambda mdl, x: x,
            lambda mdl, x: mdl.nor_conv_1x1(x, train),
            lambda mdl, x: mdl.nor_conv_3x3(x, train),
            lambda mdl, x: pool(x, "avg", 3, 1, count_include_pad=False),
        ]
        if self.is_initializing():  # create every branch's variables
            for branch in branches:
                branch(self, x)
        return nn.switch(index, branches, self, x)


class NB201Cell(nn.Module):
    """The 4-node cell; ``edge_candidates[e]`` are the ops of edge ``EDGES[e]``.

    ``choice`` selects among several candidates: float weights [6, 5] (weighted sum) or int op
    indices [6] (``lax.switch``); None for an exact cell (one candidate per edge).
    """

    edge_candidates: tuple[tuple[str, ...], ...]
    channels: int
    act: str = "leaky_relu"
    bn_momentum: float = 0.0
    layers: str = "gtn"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, choice: jax.Array | None = None,
                 drop_rate: jax.Array | float | None = None) -> jax.Array:
        switch = choice is not None and jnp.issubdtype(choice.dtype, jnp.integer)
        nodes: list[jax.Array | None] = [x]  # None: a node that is exactly zero
        for j in (1, 2, 3):
            total = None
            for i in range(j):
                e = EDGES.index((j, i))
                cands = self.edge_candidates[e]
                if cands == ("none",) or (nodes[i] is None and cands in ZERO_PRESERVING):
                    # Skipped, not computed on zeros: XLA would constant-fold a pool of a zero
                    # node at compile time, ~2 min per program on CPU for a 3x3 pool of
                    # [1000, 28, 28, 4] (measured, NB201 C=4); the result is the same zero.
                    continue
                if switch:
                    y = NB201SwitchEdge(self.channels, self.act, self.bn_momentum, self.layers,
                                        name=f"edge_{j}_{i}")(_node(nodes[i], x), train, choice[e])
                else:
                    y = NB201Edge(cands, self.channels, self.act, self.bn_momentum, self.layers,
                                  name=f"edge_{j}_{i}")(_node(nodes[i], x), train,
                                                        None if choice is None else choice[e])
                if drop_rate is not None and cands != ("skip_connect",):
                    y = drop_path(self, y, drop_rate)
                total = y if total is None else total + y
            nodes.append(total)
        if nodes[3] is not None:  # a zero map adds 0 to MeCo
            sow_feature(self, nodes[3])
        return _node(nodes[3], x)


# Exact edges whose op maps a zero input to exactly zero and has no parameters.
ZERO_PRESERVING = (("skip_connect",), ("avg_pool_3x3",))


def _node(value: jax.Array | None, like: jax.Array) -> jax.Array:
    return jnp.zeros_like(like) if value is None else value


class NB201Fields(nn.Module):
    channels: int = 16
    cells: int = 5
    num_classes: int = 10
    bn_momentum: float = 0.0
    activation: str = "leaky_relu"
    dropout: float = 0.0  # before the classifier (final training only; train mode)
    layers: str = "gtn"  # or the benchmark's own layers (search_spaces.ops)


def _nb201_forward(m: NB201Fields, x: jax.Array, train: bool,
                   edge_candidates: tuple[tuple[str, ...], ...], choice: jax.Array | None,
                   drop_path_rate: float, drop_path_scale, auxiliary: bool):
    """The macro skeleton; submodules are created in ``m`` (called from its compact method)."""
    c, n_cells = m.channels, m.cells
    x = stem(m, x, train)
    aux, depth, total = None, 0, 3 * n_cells
    for stage in range(3):
        width = c * 2 ** stage
        if stage:
            x = ResidualReduction(width, m.activation, m.bn_momentum, m.layers,
                                  name=f"reduce_{stage}")(x, train)
        if stage == 2 and auxiliary and (train or m.is_initializing()):
            aux = AuxHead(m.num_classes, m.activation, m.bn_momentum, name="aux_head")(x, train)
        for n in range(n_cells):
            depth += 1
            rate = (drop_path_rate * drop_path_scale * depth / total
                    if train and drop_path_rate > 0 else None)
            x = NB201Cell(edge_candidates, width, m.activation, m.bn_momentum, m.layers,
                          name=f"cell_{stage}_{n}")(x, train, choice, rate)
        sow_feature(m, x)  # the stage's Sequential of cells (MeCo's count)
    logits = head(m, x, train)
    return (logits, aux) if auxiliary and train else logits


def stem(m: NB201Fields, x: jax.Array, train: bool) -> jax.Array:
    """Conv 3x3 and BN, created in ``m`` (called from its compact method)."""
    x = conv(m.layers, m.channels, (3, 3), padding=same_padding(3), name="stem_conv")(x)
    sow_feature(m, x)
    x = norm(m.layers, m.bn_momentum, "stem_bn", x, train)
    sow_feature(m, x, 3)  # BN, the stem's Sequential, the stem
    return x


def head(m: NB201Fields, x: jax.Array, train: bool) -> jax.Array:
    """BN, activation, global average pool, dropout and classifier, created in ``m``."""
    x = norm(m.layers, m.bn_momentum, "final_bn", x, train)
    sow_feature(m, x)
    sow_relu_input(m, "final", x)
    x = get_activation(m.activation)(x)
    sow_feature(m, x, 2)  # ReLU and its Sequential; pooled maps and logits add 0 to MeCo
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(m.dropout, deterministic=not train or m.dropout == 0)(x)
    return dense(m.layers, m.num_classes, name="classifier")(x)


class NB201Network(NB201Fields):
    """The network of one genotype: ``__call__(x, train, drop_path_scale=1.0)``."""

    ops: tuple[str, ...] = ("none",) * NUM_EDGES
    drop_path: float = 0.0
    auxiliary: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, drop_path_scale=1.0):
        return _nb201_forward(self, x, train, tuple((op,) for op in self.ops), None,
                              self.drop_path, drop_path_scale, self.auxiliary)


def arch_weights(arch: jax.Array) -> jax.Array:
    """Edge-op weights [6, 5]: one-hot of int op indices [6], or given float weights [6, 5]
    as they are (a continuous relaxation, DARTS-style)."""
    arch = jnp.asarray(arch)
    if jnp.issubdtype(arch.dtype, jnp.integer):
        if arch.shape != (NUM_EDGES,):
            raise ArchitectureError(f"arch must be int op indices of shape ({NUM_EDGES},), "
                                    f"got shape {arch.shape}")
        return jax.nn.one_hot(arch, NUM_OPS, dtype=jnp.float32)
    if arch.shape != (NUM_EDGES, NUM_OPS):
        raise ArchitectureError(f"float arch weights must have shape ({NUM_EDGES}, {NUM_OPS}), "
                                f"got {arch.shape}")
    return arch


SHARED_MODES = ("onehot", "switch")


class NB201SharedNetwork(NB201Fields):
    """Supernet computing any genotype's function: ``__call__(x, arch, train)`` with ``arch`` the
    int32 [6] op indices of ``encode`` (may be traced), or float weights [6, 5] in onehot mode.

    ``mode="onehot"``: every edge computes all ops and sums them weighted by one_hot(arch).
    ``mode="switch"``: every edge runs only its chosen op through ``lax.switch``.
    Both give the exact network's function, the same parameters, and zero gradient to unused ops.
    """

    mode: str = "onehot"

    @nn.compact
    def __call__(self, x: jax.Array, arch: jax.Array, train: bool):
        choice = arch_weights(arch)
        if self.mode == "switch":
            arch = jnp.asarray(arch)
            if not jnp.issubdtype(arch.dtype, jnp.integer):
                raise ArchitectureError("switch mode needs int op indices, not float weights")
            choice = arch
        return _nb201_forward(self, x, train, (OPS,) * NUM_EDGES, choice, 0.0, 1.0, False)


# ---------------------------------------------------------------------------------------------
# Space and shared-program helpers


def _check_sizes(channels: int, cells: int, num_classes: int) -> None:
    for label, v in (("channels", channels), ("cells", cells), ("num_classes", num_classes)):
        if int(v) != v or v < 1:
            raise ConfigError(f"{label} must be a positive integer, got {v!r}")


class NB201Space(SearchSpace):
    """NAS-Bench-201's 15,625-cell space, enumerated in a fixed order (``index``/``from_index``)."""

    name = "nb201"
    defaults = SizeDefaults(channels=16, cells=5)  # the benchmark's C=16, N=5
    example = EXAMPLE

    @property
    def size(self) -> int:
        return NUM_OPS ** NUM_EDGES

    def sample(self, key: jax.Array) -> NB201Genotype:
        return decode(np.asarray(jax.random.randint(key, (NUM_EDGES,), 0, NUM_OPS)))

    def from_str(self, s: str) -> NB201Genotype:
        return NB201Genotype.from_str(s)

    def enumerate(self) -> Iterator[NB201Genotype]:
        """All cells, the first edge varying slowest: genotype k is ``from_index(k)``."""
        for ops in itertools.product(OPS, repeat=NUM_EDGES):
            yield NB201Genotype(ops)

    def index(self, genotype: NB201Genotype) -> int:
        """Position of ``genotype`` in ``enumerate()`` (base-5 digits of its op indices)."""
        return int(sum(int(a) * NUM_OPS ** (NUM_EDGES - 1 - e)
                       for e, a in enumerate(encode(genotype))))

    def from_index(self, k: int) -> NB201Genotype:
        if not 0 <= k < self.size:
            raise ArchitectureError(f"NB201 index must be in 0..{self.size - 1}, got {k}")
        digits = [(k // NUM_OPS ** (NUM_EDGES - 1 - e)) % NUM_OPS for e in range(NUM_EDGES)]
        return decode(digits)

    def mutate(self, genotype: NB201Genotype, key: jax.Array) -> NB201Genotype:
        """Changes the op of one uniformly chosen edge to a different, uniformly chosen op."""
        k_edge, k_op = jax.random.split(key)
        e = int(jax.random.randint(k_edge, (), 0, NUM_EDGES))
        shift = int(jax.random.randint(k_op, (), 1, NUM_OPS))
        arch = encode(genotype)
        arch[e] = (arch[e] + shift) % NUM_OPS
        return decode(arch)

    def neighbours(self, genotype: NB201Genotype, key: jax.Array | None = None,
                   limit: int | None = None) -> list[NB201Genotype]:
        """All 24 cells one edge's op away, edge by edge (the key is not needed)."""
        arch = encode(genotype)
        out = []
        for e in range(NUM_EDGES):
            for shift in range(1, NUM_OPS):
                a = arch.copy()
                a[e] = (a[e] + shift) % NUM_OPS
                out.append(decode(a))
        return out if limit is None else out[:limit]

    def build(self, genotype: NB201Genotype | str, channels: int | None = None,
              cells: int | None = None, num_classes: int = 10,
              input_shape: InputShape = (32, 32, 3), *, bn_momentum: float = 0.0,
              drop_path: float = 0.0, auxiliary: bool = False,
              activation: str = "leaky_relu", dropout: float = 0.0,
              layers: str = "gtn") -> NB201Network:
        if isinstance(genotype, str):
            genotype = self.from_str(genotype)
        if not isinstance(genotype, NB201Genotype):
            raise ArchitectureError(f"expected an NB201Genotype, got {type(genotype).__name__}")
        channels = self.defaults.channels if channels is None else channels
        cells = self.defaults.cells if cells is None else cells
        _check_sizes(channels, cells, num_classes)
        check_input_shape(input_shape)
        get_activation(activation)
        if not 0.0 <= drop_path < 1.0:
            raise ConfigError(f"drop_path must be in [0, 1), got {drop_path}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        return NB201Network(channels=int(channels), cells=int(cells),
                            num_classes=int(num_classes), bn_momentum=float(bn_momentum),
                            activation=activation, ops=genotype.ops,
                            drop_path=float(drop_path), auxiliary=bool(auxiliary),
                            dropout=float(dropout), layers=check_layers(layers))


def build_shared(channels: int = 16, cells: int = 5, num_classes: int = 10,
                 input_shape: InputShape = (32, 32, 3), bn_momentum: float = 0.0,
                 activation: str = "leaky_relu", mode: str = "onehot",
                 layers: str = "gtn") -> NB201SharedNetwork:
    """The supernet shared by all 15,625 genotypes (see the module docstring and
    ``NB201SharedNetwork`` for ``mode``)."""
    _check_sizes(channels, cells, num_classes)
    check_input_shape(input_shape)
    get_activation(activation)
    if mode not in SHARED_MODES:
        raise ConfigError(f"unknown shared mode {mode!r}; choose one of {', '.join(SHARED_MODES)}")
    return NB201SharedNetwork(channels=int(channels), cells=int(cells),
                              num_classes=int(num_classes), bn_momentum=float(bn_momentum),
                              activation=activation, mode=mode, layers=check_layers(layers))


def shared_learner(arch: jax.Array | np.ndarray, channels: int = 16, cells: int = 5,
                   num_classes: int = 10, input_shape: InputShape = (32, 32, 3),
                   mode: str = "onehot", layers: str = "gtn") -> Learner:
    """The genotype ``arch`` (int32 [6], see ``encode``) as a Learner on the shared supernet.

    ``init`` does not depend on ``arch``, so all architectures share one parameter layout. To share
    one compiled program across architectures, call this inside the jitted function with ``arch``
    a traced argument; a concrete ``arch`` captured outside jit becomes a compile-time constant.
    BN momentum is 0 (the GTN setting).
    """
    module = build_shared(channels, cells, num_classes, input_shape, mode=mode, layers=layers)
    dummy_x = jnp.zeros((2, *input_shape), jnp.float32)
    dummy_arch = jnp.zeros((NUM_EDGES,), jnp.int32)

    def init(key: jax.Array):
        variables = module.init(key, dummy_x, dummy_arch, train=True)
        return variables["params"], variables.get("batch_stats", {})

    def apply(params, state, x: jax.Array, train: bool):
        variables = {"params": params, "batch_stats": state}
        if train:
            logits, updated = module.apply(variables, x, arch, train=True,
                                           mutable=["batch_stats"])
            return logits, updated.get("batch_stats", {})
        return module.apply(variables, x, arch, train=False), state

    return Learner("nb201_shared", init, apply)


_EDGE_NAME = re.compile(r"edge_(\d)_(\d)$")


def edge_of_path(path: Sequence[str]) -> tuple[str, str] | None:
    """(edge module name ``edge_j_i``, op name) of a variable path inside an edge op (the edge
    followed by the op's submodule), or None for a path outside the cells' edge ops."""
    for p, part in enumerate(path[:-1]):
        if _EDGE_NAME.match(part):
            return part, path[p + 1]
    return None


def edge_index(edge_name: str) -> int:
    """The position in ``EDGES`` of the edge module ``edge_j_i``."""
    m = _EDGE_NAME.match(edge_name)
    return EDGES.index((int(m.group(1)), int(m.group(2))))


def subnet_variables(genotype: NB201Genotype, shared_variables):
    """The exact network's variables (any collections) taken from the supernet's: every path
    except the edge ops the genotype does not use."""
    flat = traverse_util.flatten_dict(shared_variables)
    kept = {}
    for path, value in flat.items():
        edge = edge_of_path(path)
        if edge is None or edge[1] == genotype.ops[edge_index(edge[0])]:
            kept[path] = value
    return traverse_util.unflatten_dict(kept)


def active_param_count(genotype: NB201Genotype, channels: int = 16, cells: int = 5,
                       num_classes: int = 10, input_shape: InputShape = (32, 32, 3)) -> int:
    """Parameters of the exact network of ``genotype`` (no allocation)."""
    module = NB201Space().build(genotype, channels, cells, num_classes, input_shape)
    return count_params(module, input_shape)
