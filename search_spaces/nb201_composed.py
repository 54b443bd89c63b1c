"""NB201 genotypes trained by per-op programs compiled once per process and strung together in
Python, so a search compiles nothing per architecture.

Why: on CPU a search compiled each genotype's own step and eval programs, 3.0 of the 5.8 s it
spent per architecture (benchmarks/RESULTS.md, Search cost), while every NB201 network is the same
skeleton (stem, two reductions, head) around cells whose edges hold one of a handful of ops. Each
piece's forward (returning its VJP residuals), its backward fused with its SGD update, and its
eval forward are programs keyed by the piece and the input shape: a search compiles a few dozen
of them in its first architectures and then none. The Python walk costs ~70 dispatches a step;
XLA's fusions stay inside each op (activation, convolution and BN are one program), which is
where a cell network's time goes.

The numbers are those of the genotype's own ``NB201Network`` trained by ``unroll.sgd_step`` up to
float rounding: the same modules and parameter tree, the same init, the same update (tested
against both). Edges whose output cannot reach the loss get exactly zero gradients there, which
leave SGD's parameters and momentum unchanged, so they are skipped here.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gtn_nas.core.images import normalize
from gtn_nas.core.learners import learner_from_module
from gtn_nas.core.metrics import count_correct, split_accuracy
from gtn_nas.core.nn.spatial import conv_setting
from gtn_nas.core.unroll import (InnerState, init_inner_state, momentum_update,
                                 soft_cross_entropy)
from gtn_nas.errors import ConfigError
from search_spaces.nb201 import (EDGES, ZERO_PRESERVING, NB201Edge, NB201Fields, NB201Network,
                                 head, stem)
from search_spaces.ops import ResidualReduction

Path = tuple[str, ...]


class _Stem(NB201Fields):
    """The network's stem, under the network's own parameter names."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return stem(self, x, train)


class _Head(NB201Fields):
    """The network's head (to the logits), under the network's own parameter names."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return head(self, x, train)


@dataclass(frozen=True)
class _Block:
    """A module and where its variables sit in the network's trees: the subtree at ``path``, or
    (``names``) the top-level entries of those names."""

    module: nn.Module
    path: Path = ()
    names: tuple[str, ...] = ()

    def take(self, tree: dict) -> dict:
        if self.names:
            return {n: tree[n] for n in self.names if n in tree}
        return _get(tree, self.path) if _has(tree, self.path) else {}

    def put(self, tree: dict, sub: dict) -> None:
        if self.names:
            for n in self.names:
                if n in sub:
                    tree[n] = sub[n]
        elif sub or _has(tree, self.path):
            _set(tree, self.path, sub)


def _has(tree: dict, path: Path) -> bool:
    for k in path:
        if not isinstance(tree, dict) or k not in tree:
            return False
        tree = tree[k]
    return True


def _get(tree: dict, path: Path):
    for k in path:
        tree = tree[k]
    return tree


def _set(tree: dict, path: Path, value) -> None:
    for k in path[:-1]:
        tree = tree[k]
    tree[path[-1]] = value


def _dict_copy(tree):
    """The dict nodes copied (so entries can be replaced), the arrays shared."""
    return {k: _dict_copy(v) for k, v in tree.items()} if isinstance(tree, dict) else tree


def _apply(module: nn.Module, p, s, x, train: bool):
    """A block as a Learner's apply: (output, new batch statistics)."""
    return learner_from_module("block", module, x.shape[1:]).apply(p, s, x, train)


# -- the programs: one per module and kind, each jit compiling once per input shape -----------

def _per_conv_setting(build):
    """``build(*args)`` cached per arguments and $GTN_NAS_CONV (read when a program traces, so
    part of what it is)."""
    cached = functools.lru_cache(maxsize=None)(lambda conv, *args: build(*args))
    return lambda *args: cached(conv_setting(), *args)


@_per_conv_setting
def _train_vjp(module: nn.Module, wrt_x: bool):
    """(p, s, x) -> (y, vjp, new stats), the VJP with respect to (p, x) or (``wrt_x`` False) p."""

    def train_vjp(p, s, x):
        if wrt_x:
            return jax.vjp(lambda p, x: _apply(module, p, s, x, True), p, x, has_aux=True)
        return jax.vjp(lambda p: _apply(module, p, s, x, True), p, has_aux=True)

    return jax.jit(train_vjp)


@_per_conv_setting
def _forward(module: nn.Module):
    """(p, s, x, train) -> (y, new stats), no gradients."""
    return jax.jit(functools.partial(_apply, module), static_argnums=3)


@jax.jit
def _backward(vjp, g, p, buf, lr, mom):
    """A block's backward fused with its update: (new p, new buf, gradient wrt its input or
    None)."""
    grads = vjp(g)
    p, buf = momentum_update(p, buf, grads[0], lr, mom)
    return p, buf, grads[1] if len(grads) > 1 else None


@_per_conv_setting
def _head_step(module: nn.Module):
    """(p, s, buf, h, y, lr, mom) -> (new p, new buf, new stats, d loss / d h, loss)."""

    def step(p, s, buf, h, y, lr, mom):
        def loss_fn(p, h):
            logits, new_s = _apply(module, p, s, h, True)
            return soft_cross_entropy(logits, y), new_s

        (loss, new_s), (gp, gh) = jax.value_and_grad(loss_fn, (0, 1), has_aux=True)(p, h)
        p, buf = momentum_update(p, buf, gp, lr, mom)
        return p, buf, new_s, gh, loss

    return jax.jit(step)


@jax.jit
def _pullback(vjp, g):
    """A block's gradients: (wrt its parameters, wrt its input or None)."""
    grads = vjp(g)
    return grads[0], grads[1] if len(grads) > 1 else None


@_per_conv_setting
def _head_grads(module: nn.Module, logit_sum: bool):
    """(p, s, h, y) -> (d R / d p, d R / d h): R the mean cross-entropy with labels ``y``, or
    (``logit_sum``) the sum of the logits."""

    def value(p, s, h, y):
        logits = _apply(module, p, s, h, True)[0]
        return jnp.sum(logits) if logit_sum else soft_cross_entropy(logits, y)

    return jax.jit(jax.grad(value, (0, 2)))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _normalize(x, mean, std):
    return normalize(x, mean, std)


_add = jax.jit(jnp.add)
_COMPILED: set = set()  # ComposedNB201._signatures already run in this process
_count_correct = jax.jit(count_correct)


# -- the network --------------------------------------------------------------------------------

class ComposedNB201:
    """``core.training.SteppedLearner``'s interface (init, compile, train, run, recalibrate,
    accuracy) for one NB201 genotype's network, run as the composed per-op programs."""

    def __init__(self, network: NB201Network, input_shape, mean, std, chunk: int):
        if network.drop_path or network.auxiliary or network.dropout:
            raise ConfigError("composed NB201 programs train the search's networks only (no "
                              "drop-path, auxiliary head or dropout)")
        self.mean, self.std, self.chunk = tuple(mean), tuple(std), chunk
        self.learner = learner_from_module("nb201-composed", network, input_shape)
        m = network
        fields = {f: getattr(m, f) for f in ("channels", "cells", "num_classes", "bn_momentum",
                                             "activation", "dropout", "layers")}
        self.stem = _Block(_Stem(**fields), names=("stem_conv", "stem_bn"))
        self.head = _Block(_Head(**fields), names=("final_bn", "classifier"))
        self.stages = []  # [(reduction block or None, [cell: [(j, i, op, block or None)]])]
        for stage in range(3):
            width = m.channels * 2 ** stage
            reduce = (_Block(ResidualReduction(width, m.activation, m.bn_momentum, m.layers),
                             (f"reduce_{stage}",)) if stage else None)
            cells = []
            for n in range(m.cells):
                edges = []
                for e, (j, i) in enumerate(EDGES):
                    op = m.ops[e]  # skip_connect and none: no program (an identity, a zero)
                    block = (None if op in ("skip_connect", "none") else
                             _Block(NB201Edge((op,), width, m.activation, m.bn_momentum, m.layers),
                                    (f"cell_{stage}_{n}", f"edge_{j}_{i}")))
                    edges.append((j, i, op, block))
                cells.append(sorted(edges))  # NB201Cell's order: by node j, then source i
            self.stages.append((reduce, cells))

    # -- walking the network --------------------------------------------------------------------

    def _walk(self, params, stats, new_stats, x, run):
        """The network up to the head's input. ``run(block, p, s, x) -> (y, s', record)``;
        returns (h, tape) with the tape in forward order."""
        tape = []

        def block(b, h):
            y, s, rec = run(b, b.take(params), b.take(stats), h)
            b.put(new_stats, s)
            tape.append(("block", b, rec))
            return y

        h = block(self.stem, x)
        for reduce, cells in self.stages:
            if reduce is not None:
                h = block(reduce, h)
            for edges in cells:
                h = self._cell(edges, params, stats, new_stats, h, run, tape)
        return h, tape

    @staticmethod
    def _cell(edges, params, stats, new_stats, x, run, tape):
        """NB201Cell's forward: an edge from a node that is exactly zero (None) is skipped when
        its op keeps zeros (none, skip, pool) and computed on zeros otherwise."""
        nodes: list = [x, None, None, None]
        records = []
        for j, i, op, b in edges:
            if op == "none" or (nodes[i] is None and (op,) in ZERO_PRESERVING):
                continue
            src = jnp.zeros_like(x) if nodes[i] is None else nodes[i]
            if op == "skip_connect":
                y, rec = src, None
            else:
                y, s, rec = run(b, b.take(params), b.take(stats), src)
                b.put(new_stats, s)
            records.append((j, i, b, rec, nodes[i] is None))
            nodes[j] = y if nodes[j] is None else _add(nodes[j], y)
        tape.append(("cell", records, nodes[3] is None))
        return jnp.zeros_like(x) if nodes[3] is None else nodes[3]

    # -- the SteppedLearner interface -----------------------------------------------------------

    def init(self, key: jax.Array) -> InnerState:
        return init_inner_state(self.learner, key)

    def step(self, st: InnerState, x, y, lr, mom) -> tuple[InnerState, jax.Array]:
        """One ``unroll.sgd_step``: forward with VJP residuals, head, backward with updates."""
        params, new_p = st.params, _dict_copy(st.params)
        new_buf, new_s = _dict_copy(st.momentum), _dict_copy(st.stats)

        def run(b, p, s, h):
            y, vjp, s = _train_vjp(b.module, b is not self.stem)(p, s, h)
            return y, s, vjp

        h, tape = self._walk(params, st.stats, new_s, x, run)
        hb = self.head
        p, buf, s, g, loss = _head_step(hb.module)(hb.take(params), hb.take(st.stats),
                                                  hb.take(st.momentum), h, y, lr, mom)
        for tree, sub in ((new_p, p), (new_buf, buf), (new_s, s)):
            hb.put(tree, sub)

        def update(b, vjp, g):
            p, buf, gx = _backward(vjp, g, b.take(params), b.take(st.momentum), lr, mom)
            b.put(new_p, p)
            b.put(new_buf, buf)
            return gx

        self._backprop(tape, g, update)
        return InnerState(new_p, new_buf, new_s), loss

    def gradients(self, params, stats, x, targets=(None,)) -> list[tuple[dict, jax.Array]]:
        """(d R / d params, d R / d x) of one batch ``x`` (normalised) per target, from one
        forward pass, BN on the batch's statistics, as ``jax.grad`` of the genotype's own network
        (zero for parameters that cannot reach R): R the mean cross-entropy with one-hot or soft
        labels, or (a target None) the sum of the logits. What snip, grad_norm, jacov and ZiCo
        read, at jit speed."""

        def run(b, p, s, h):
            y, vjp, s = _train_vjp(b.module, True)(p, s, h)
            return y, s, vjp

        h, tape = self._walk(params, stats, _dict_copy(stats), x, run)
        hb = self.head
        out = []
        for y in targets:  # each walks back through the same forward's residuals
            grads = jax.tree_util.tree_map(jnp.zeros_like, params)
            gp, g = _head_grads(hb.module, y is None)(hb.take(params), hb.take(stats), h, y)
            hb.put(grads, gp)

            def update(b, vjp, g, grads=grads):
                gp, gx = _pullback(vjp, g)
                b.put(grads, gp)
                return gx

            gx = self._backprop(tape, g, update)
            out.append((grads, jnp.zeros_like(x) if gx is None else gx))
        return out

    @staticmethod
    def _backprop(tape, g, update) -> None:
        """The reverse walk of ``_walk``'s tape from the head's input gradient ``g``;
        ``update(block, vjp, g)`` consumes a block's output gradient, returns its input's.
        Returns the gradient of the network's input (None: it cannot reach the head)."""
        for kind, a, rec in reversed(tape):
            if g is None:  # nothing before this point reaches the loss: zero gradients
                break
            if kind == "block":
                g = update(a, rec, g)
                continue
            if rec:  # the cell's output is exactly zero, whatever its input
                g = None
                continue
            grads: list = [None, None, None, g]
            for j, i, b, vjp, from_zero in reversed(a):
                gj = grads[j]
                if gj is None:
                    continue
                gx = gj if b is None else update(b, vjp, gj)
                if not from_zero:
                    grads[i] = gx if grads[i] is None else _add(grads[i], gx)
            g = grads[0]
        return g

    def forward(self, st: InnerState, x, train: bool):
        """(logits, new stats) without gradients: eval mode, or train mode's statistics."""
        new_s = _dict_copy(st.stats)

        def run(b, p, s, h):
            y, s = _forward(b.module)(p, s, h, train)
            return y, s, None

        h, _ = self._walk(st.params, st.stats, new_s, x, run)
        logits, s = _forward(self.head.module)(self.head.take(st.params),
                                               self.head.take(st.stats), h, train)
        self.head.put(new_s, s)
        return logits, new_s

    def _signatures(self, batch_sizes, image_shape, num_classes: int, val_dtype) -> set:
        """What the programs this genotype runs are compiled for (module, VJP kind, shapes)."""
        shapes = (tuple(image_shape), tuple(batch_sizes), num_classes, self.chunk,
                  np.dtype(val_dtype).str, self.stem.module.channels, conv_setting())
        blocks = [(self.stem, False), (self.head, True)]
        for reduce, cells in self.stages:
            blocks += [(reduce, True)] if reduce is not None else []
            blocks += [(b, True) for edges in cells for _, _, _, b in edges if b is not None]
        return {(b.module, wrt_x) + shapes for b, wrt_x in blocks}

    def compile(self, key: jax.Array, batch_sizes, image_shape, num_classes: int, val_dtype,
                arch=None) -> float:
        """Compiles what this genotype needs and no earlier one did, by running a step of each
        batch size and an eval chunk on zeros (nothing when all of it is compiled already);
        returns the seconds taken."""
        t0 = time.perf_counter()
        batch_sizes = sorted(set(int(b) for b in batch_sizes))
        needed = self._signatures(batch_sizes, image_shape, num_classes, val_dtype)
        if not needed <= _COMPILED:
            st = self.init(key)
            for b in batch_sizes:  # arguments of the kinds ``run`` passes (rows of arrays)
                xs = jnp.zeros((1, b, *image_shape), jnp.float32)
                ys = jnp.zeros((1, b, num_classes), jnp.float32)
                jax.block_until_ready(self.run(st, xs, ys, jnp.zeros(1), jnp.zeros(1)))
            jax.block_until_ready(self._correct(
                st, np.zeros((self.chunk, *image_shape), val_dtype),
                np.zeros((self.chunk,), np.int32), np.ones((self.chunk,), bool)))
            _COMPILED.update(needed)
        return time.perf_counter() - t0

    def train(self, key_init: jax.Array, xs, ys, lrs, moms, arch=None) -> InnerState:
        return self.run(self.init(key_init), xs, ys, lrs, moms, arch)

    def run(self, st: InnerState, xs, ys, lrs, moms, arch=None) -> InnerState:
        # strong float32 (a weakly typed schedule would compile every program a second time)
        lrs, moms = (jax.lax.convert_element_type(v, jnp.float32) for v in (lrs, moms))
        for t in range(xs.shape[0]):
            st = self.step(st, xs[t], ys[t], lrs[t], moms[t])[0]
        return st

    def recalibrate(self, st: InnerState, images, arch=None) -> InnerState:
        """``training.recalibrate_bn``: the statistics of one train-mode pass over ``images``."""
        return st._replace(stats=self.forward(st, images, True)[1])

    def _correct(self, st: InnerState, x, y, valid):
        logits, _ = self.forward(st, _normalize(x, self.mean, self.std), False)
        return _count_correct(logits, y, valid)

    def accuracy(self, st: InnerState, images, labels, arch=None) -> float:
        return split_accuracy(lambda x, y, valid: self._correct(st, x, y.astype(np.int32), valid),
                              np.asarray(images), np.asarray(labels), self.chunk)


__all__ = ["ComposedNB201"]
