"""Zero-cost proxies: scores of an untrained network without training, and their registry.

Definitions as in NASLib / NAS-Bench-Suite-Zero (Abdelfattah et al. 2021, Mellor et al. 2021) and
the newer proxies' official code, on the benchmark's own network: NAS-Bench-201's ReLU-conv-BN
ops, plain convolutions and linear layer with PyTorch's default init, BN in train mode (batch
statistics), freshly initialised from the architecture's key. "Weights" are the conv and linear
kernels (not BN, not biases).

- ``synflow``: every BN removed, every parameter made absolute, an all-ones input of batch 1, R the
  sum of the logits; Σ|θ·∂R/∂θ|. In float64 by default (as NASLib), since the products of absolute
  weights along paths overflow float32 in deep cells; ``synflow_dtype`` chooses.
- ``naswot``: c = 1[ReLU input > 0] per image for every ReLU of the network (each flattened),
  K = Σ_ReLUs c·cᵀ + (1−c)(1−c)ᵀ over the batch; log|det K|.
- ``jacov``: J = ∂(Σ logits)/∂x per image, flattened; λ the eigenvalues of J's correlation
  matrix; −Σ (log(λ + 1e-5) + 1/(λ + 1e-5)).
- ``snip``: Σ|θ·∂L/∂θ|, L the mean cross-entropy of the batch.
- ``grad_norm``: Σ over weight tensors of ‖∂L/∂θ‖₂.
- ``meco`` (Jiang et al., NeurIPS 2023): per feature map of one image, the smallest eigenvalue
  of the Pearson correlation matrix of its channels (over spatial positions; undefined entries,
  such as those of a constant channel, set to 0), summed over the network's feature maps. As
  the official code that produced the paper's NB201 figure (``correlation/NAS_Bench_201.py``):
  one real training image, a batch of 1, BN on that image's statistics, and a forward hook on
  *every* PyTorch module, so a feature map counts once per module that returns it (a conv op's
  BN output three times: BN, its Sequential, ReLUConvBN); ``feature_maps`` records them with
  those multiplicities (search_spaces.ops.sow_feature). The issue's "one random input" is the
  paper's Table 3 variant, not the table's.
- ``zico`` (Li et al., ICLR 2023): gradients g_b of the mean cross-entropy on 2 batches of 128;
  per weight tensor, log Σ mean_b|g| / std_b(g) over its entries whose std is not 0 (a tensor
  whose sum is 0 adds nothing), summed over tensors; as the official ``compute_zico.py``
  (gradients zeroed between batches, numpy's std with ddof 0).

Each proxy is one ``ZeroCostProxy`` entry of ``ZERO_COST`` (the registry ``--proxy`` reads): the
pass that computes its raw value, how the raw value becomes a score, and the published ρ its
benchmark compares with. A score that is not finite (a singular K, a constant Jacobian: networks
whose output ignores the input) is stored as ``DEGENERATE``, below every finite score.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from gtn_nas.core.images import normalize
from gtn_nas.core.metrics import nll
from gtn_nas.errors import ConfigError

DEGENERATE = -1e30  # a zero-cost score where the proxy is undefined (below every finite score)
JACOV_EPS = 1e-5
ZICO_BATCHES = 2  # ZiCo's gradients: 2 batches of 128 (the paper's NB201 setting)
ZICO_BATCH = 128
_WEIGHTS = "kernel"  # the parameter name of PlainConv / PlainDense weights


def _kernels(tree) -> list[jax.Array]:
    flat = traverse_util.flatten_dict(tree)
    return [v for path, v in sorted(flat.items()) if path[-1] == _WEIGHTS]


def snip_score(params, grads) -> jax.Array:
    return sum(jnp.sum(jnp.abs(w * g)) for w, g in zip(_kernels(params), _kernels(grads)))


def grad_norm_score(grads) -> jax.Array:
    return sum(jnp.sqrt(jnp.sum(jnp.square(g))) for g in _kernels(grads))


def naswot_kernel(taps: Sequence[tuple[jax.Array, jax.Array]]) -> jax.Array:
    """K [B, B] of (ReLU input, how many ReLUs read it) pairs: per input, with c its codes
    [B, D], c·cᵀ + (1−c)(1−c)ᵀ = 2·c·cᵀ − r·1ᵀ − 1·rᵀ + D (r the row sums), one matmul. Inputs
    that several ReLUs read (a node feeding several conv ops) are coded once, with their counts
    added: every value is an integer below 2^24, exact in float32."""
    unique: dict[int, list] = {}
    for x, count in taps:
        entry = unique.setdefault(id(x), [x, 0.0])
        entry[1] = entry[1] + count
    k = 0.0
    for x, count in unique.values():
        c = (x.reshape(x.shape[0], -1) > 0).astype(jnp.float32)
        r = jnp.sum(c, axis=1)
        k = k + count * (2.0 * (c @ c.T) - r[:, None] - r[None, :] + c.shape[1])
    return k


def naswot_score(k: np.ndarray) -> float:
    sign, logdet = np.linalg.slogdet(np.asarray(k, np.float64))
    return float(logdet) if sign != 0 and math.isfinite(logdet) else DEGENERATE


def jacov_score(jac: np.ndarray) -> float:
    j = np.asarray(jac, np.float64).reshape(len(jac), -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(j)
    if not np.all(np.isfinite(corr)):
        return DEGENERATE
    lam = np.linalg.eigvalsh(corr)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = -float(np.sum(np.log(lam + JACOV_EPS) + 1.0 / (lam + JACOV_EPS)))
    return v if math.isfinite(v) else DEGENERATE


def meco_map(fmap: np.ndarray) -> float:
    """MeCo of one feature map [H, W, C] (one image): the smallest eigenvalue of the [C, C]
    Pearson correlation of its channels over the H·W positions, undefined entries set to 0."""
    f = np.asarray(fmap, np.float64).reshape(-1, fmap.shape[-1]).T  # [C, H·W]
    if f.shape[1] < 2:  # one position: every correlation undefined, the matrix 0
        return 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.atleast_2d(np.corrcoef(f))
    corr[~np.isfinite(corr)] = 0.0
    return float(np.linalg.eigvalsh(corr)[0])


def meco_score(maps: Sequence[tuple[np.ndarray, int]]) -> float:
    """Σ count · ``meco_map`` over (feature map of one image, multiplicity) pairs."""
    total, seen = 0.0, {}
    for fmap, count in maps:
        key = id(fmap)
        if key not in seen:
            seen[key] = meco_map(fmap)
        total += count * seen[key]
    return total if math.isfinite(total) else DEGENERATE


def zico_score(grads: Sequence[Sequence[np.ndarray]]) -> float:
    """ZiCo of per-batch gradients ``grads[b][t]`` (batch b, weight tensor t)."""
    total = 0.0
    for tensor in zip(*grads):
        g = np.stack([np.asarray(a, np.float64).ravel() for a in tensor])  # [batches, entries]
        std = g.std(axis=0)
        keep = std != 0
        ratio = float(np.sum(np.mean(np.abs(g), axis=0)[keep] / std[keep]))
        if ratio != 0:
            total += math.log(ratio)
    return total if math.isfinite(total) else DEGENERATE


def relu_taps(relu_inputs, weights: jax.Array | None):
    """(ReLU input, count) pairs from the ``relu_inputs`` collection of an NB201 network: an op
    of the supernet's edge (…/edge_j_i/<op>/…) counts with its one-hot weight, the rest once."""
    from search_spaces.nb201 import OPS, edge_index, edge_of_path

    taps = []
    for path, values in sorted(traverse_util.flatten_dict(relu_inputs).items()):
        edge = edge_of_path(path)
        count = (jnp.float32(1.0) if weights is None or edge is None
                 else weights[edge_index(edge[0]), OPS.index(edge[1])])
        taps.extend((v, count) for v in values)
    return taps


def feature_maps(collection) -> list[tuple[jax.Array, int]]:
    """(feature map, multiplicity) pairs of a ``feature_maps`` collection (ops.sow_feature)."""
    from search_spaces.ops import feature_count

    return [(v, feature_count(path[-1]))
            for path, values in sorted(traverse_util.flatten_dict(collection).items())
            for v in values]


def _finite(v) -> float:
    v = float(v)
    return v if math.isfinite(v) else DEGENERATE


@dataclass(frozen=True)
class ZeroCostProxy:
    """One zero-cost proxy: ``run`` names the ``ZeroCostScorer`` pass that computes its raw value
    (proxies of one pass share it), ``finish`` turns that into the stored score, and
    ``published`` is the Spearman ρ range on NB201 CIFAR-10 of ``source`` (benchmarks/zero_cost.py
    compares with it)."""

    run: str
    finish: Callable[[Any], float]
    published: tuple[float, float]
    source: str


ZERO_COST: dict[str, ZeroCostProxy] = {
    "synflow": ZeroCostProxy("synflow", _finite, (0.74, 0.78),
                             "Abdelfattah et al. 2021; NAS-Bench-Suite-Zero"),
    "naswot": ZeroCostProxy("naswot", naswot_score, (0.80, 0.80), "Mellor et al. 2021"),
    "jacov": ZeroCostProxy("grads", jacov_score, (0.73, 0.73), "Abdelfattah et al. 2021"),
    "snip": ZeroCostProxy("grads", _finite, (0.60, 0.65), "Abdelfattah et al. 2021"),
    "grad_norm": ZeroCostProxy("grads", _finite, (0.59, 0.65), "Abdelfattah et al. 2021"),
    "meco": ZeroCostProxy("meco", meco_score, (0.89, 0.89), "Jiang et al. 2023, Table 1"),
    "zico": ZeroCostProxy("zico", zico_score, (0.80, 0.80), "Li et al. 2023"),
}


class ZeroCostScorer:
    """The zero-cost proxies of NB201 genotypes at one size, on fixed images of a search.

    ``images``/``labels``: the training split (uint8 NHWC, int); the batch is ``batch_size`` of
    them drawn with ``batch_key`` (MeCo reads its first image); ZiCo's 2 x 128 are drawn with
    ``fold_in(batch_key, 1)``. ``score(genotype, key, proxies)`` -> {proxy: (score, seconds)},
    the genotype's own network initialised from ``key``.

    No architecture compiles a program of its own: forwards run eagerly, op by op (XLA compiles
    each primitive once per shape and every later architecture reuses it), and gradients run as
    NB201's per-op programs (``composed``), compiled once per process. Measured on 2 cores at
    C=16, N=5, batch 64 (benchmarks/RESULTS.md, Zero-cost proxies): one jitted one-hot supernet
    program for all architectures compiled in 153 s and took 15.6 s per architecture for naswot,
    jacov, snip and grad_norm; eager exact networks 1.9 s; eager gradients are ~4x slower than
    the per-op programs.
    """

    def __init__(self, channels: int, cells: int, num_classes: int, input_shape, images, labels,
                 mean, std, batch_size: int, batch_key: jax.Array,
                 synflow_dtype: str = "float64", zico_batch: int = ZICO_BATCH):
        if batch_size < 2:
            raise ConfigError(f"zero-cost proxies need a batch of at least 2 images, got "
                              f"{batch_size}")
        if synflow_dtype not in ("float32", "float64"):
            raise ConfigError(f"synflow dtype must be float32 or float64, got {synflow_dtype!r}")
        n = len(labels)
        if n < batch_size:
            raise ConfigError(f"the training split has {n} images, fewer than the zero-cost "
                              f"batch of {batch_size}")
        self.sizes = dict(channels=channels, cells=cells, num_classes=num_classes,
                          input_shape=tuple(input_shape), activation="relu")
        self.input_shape = tuple(input_shape)
        self.synflow_dtype = synflow_dtype
        images, labels = np.asarray(images), np.asarray(labels)
        pick = np.asarray(jax.random.choice(batch_key, n, (batch_size,), replace=False))
        self.x = normalize(images[pick], mean, std)
        self.y = jnp.asarray(labels[pick], jnp.int32)
        self._zico_data = (images, labels, mean, std, jax.random.fold_in(batch_key, 1),
                           min(zico_batch, n // ZICO_BATCHES))
        self._zico_batches = None  # drawn on first use: most searches never run ZiCo

    def networks(self, genotype):
        """(the benchmark's network of ``genotype``, the same without BN)."""
        from search_spaces import get_space

        space = get_space("nb201")
        return (space.build(genotype, **self.sizes, layers="benchmark"),
                space.build(genotype, **self.sizes, layers="benchmark_nobn"))

    # -- the passes: each computes the raw values of the proxies whose ``run`` names it ------

    def batch_scores(self, net, params, stats, arch=None,
                     wanted: Sequence[str] = ("naswot", "jacov", "snip", "grad_norm")
                     ) -> dict[str, Any]:
        """naswot's K, the input Jacobian, snip and grad_norm from one eager forward pass and its
        VJP (not taken when only naswot is ``wanted``). ``arch``: the op indices when ``net`` is
        the one-hot supernet (``nb201.build_shared``); genotypes' own networks take their
        gradients from ``composed`` instead (``_run``)."""
        from search_spaces.nb201 import arch_weights

        extra = () if arch is None else (arch,)

        def forward(params, x):
            logits, cols = net.apply({"params": params, "batch_stats": stats}, x, *extra,
                                     train=True, mutable=["batch_stats", "relu_inputs"])
            return logits, cols["relu_inputs"]

        weights = None if arch is None else arch_weights(arch)
        if set(wanted) <= {"naswot"}:
            return {"naswot": naswot_kernel(relu_taps(forward(params, self.x)[1], weights))}
        logits, vjp, relu_inputs = jax.vjp(forward, params, self.x, has_aux=True)
        k = naswot_kernel(relu_taps(relu_inputs, weights))
        _, jac = vjp(jnp.ones_like(logits))
        grads, _ = vjp(jax.grad(nll)(logits, self.y))  # L: the project's mean cross-entropy
        return {"naswot": k, "jacov": jac, "snip": snip_score(params, grads),
                "grad_norm": grad_norm_score(grads)}

    def synflow(self, net_nobn, params, arch=None) -> jax.Array:
        """Σ|θ·∂R/∂θ| in ``synflow_dtype`` (call it inside ``jax.enable_x64`` for float64)."""
        dtype = jnp.dtype(self.synflow_dtype)
        params = jax.tree_util.tree_map(lambda p: jnp.abs(p).astype(dtype), params)
        x = jnp.ones((1, *self.input_shape), dtype)
        extra = () if arch is None else (arch,)

        def total(p):
            return jnp.sum(net_nobn.apply({"params": p}, x, *extra, train=True))

        return snip_score(params, jax.grad(total)(params))

    def meco_maps(self, net, params, stats) -> list[tuple[np.ndarray, int]]:
        """The feature maps of the batch's first image, alone in its batch, and their counts."""
        _, cols = net.apply({"params": params, "batch_stats": stats}, self.x[:1], train=True,
                            mutable=["batch_stats", "feature_maps"])
        return [(np.asarray(v)[0], c) for v, c in feature_maps(cols["feature_maps"])]

    def composed(self, net):
        """``net`` run as NB201's per-op programs (search_spaces.nb201_composed), compiled once
        per process: its gradients at jit speed, where eager ``jax.grad`` is ~4x slower (4.1 s
        against 1.1 s a batch of 128 at C=16, N=5 on 2 cores)."""
        from search_spaces.nb201_composed import ComposedNB201

        return ComposedNB201(net, self.input_shape, (0.0,), (1.0,), 1)

    def zico_grads(self, net, params, stats) -> list[list[np.ndarray]]:
        """The kernels' gradients of the mean cross-entropy, one list per ZiCo batch."""
        if self._zico_batches is None:
            images, labels, mean, std, key, size = self._zico_data
            pick = np.asarray(jax.random.choice(key, len(labels), (ZICO_BATCHES * size,),
                                                replace=False)).reshape(ZICO_BATCHES, size)
            self._zico_batches = [(normalize(images[p], mean, std), self._onehot(labels[p]))
                                  for p in pick]
        composed = self.composed(net)
        grads = [composed.gradients(params, stats, x, [y])[0][0] for x, y in self._zico_batches]
        return [[np.asarray(g) for g in _kernels(tree)] for tree in grads]

    def _onehot(self, labels) -> jax.Array:
        return jax.nn.one_hot(jnp.asarray(labels), self.sizes["num_classes"], dtype=jnp.float32)

    def _run(self, name: str, members, net, net_nobn, params, stats) -> dict[str, Any]:
        """The raw values of pass ``name`` for the proxies ``members`` on the genotype's own
        network."""
        if name == "naswot":
            return jax.device_get(self.batch_scores(net, params, stats, wanted=("naswot",)))
        if name == "grads":  # one forward; L the batch's mean cross-entropy, ∂(Σ logits)/∂x
            loss = [p for p in members if p in ("snip", "grad_norm")]
            targets = ([self._onehot(self.y)] if loss else []) + (
                [None] if "jacov" in members else [])
            got = self.composed(net).gradients(params, stats, self.x, targets)
            raw = {"jacov": np.asarray(got[-1][1])} if "jacov" in members else {}
            if loss:
                grads = got[0][0]
                raw.update(jax.device_get({"snip": snip_score(params, grads),
                                           "grad_norm": grad_norm_score(grads)}))
            return raw
        if name == "synflow":
            with jax.enable_x64(self.synflow_dtype == "float64"):
                return {"synflow": jax.device_get(self.synflow(net_nobn, params))}
        if name == "meco":
            return {"meco": self.meco_maps(net, params, stats)}
        if name == "zico":
            return {"zico": self.zico_grads(net, params, stats)}
        raise ValueError(f"no zero-cost pass {name!r}")

    def score(self, genotype, key: jax.Array, proxies: Sequence[str]) -> dict[str, tuple]:
        unknown = [p for p in proxies if p not in ZERO_COST]
        if unknown:
            raise ConfigError(f"not zero-cost proxies: {', '.join(unknown)}")
        t0 = time.perf_counter()
        net, net_nobn = self.networks(genotype)
        variables = net.init(key, self.x[:2], train=True)
        params, stats = variables["params"], variables.get("batch_stats", {})
        init_s = time.perf_counter() - t0  # charged to the first pass
        passes: dict[str, list[str]] = {}
        for p in proxies:
            passes.setdefault(ZERO_COST[p].run, []).append(p)
        out: dict[str, tuple] = {}
        for name, members in passes.items():
            t0 = time.perf_counter()
            raw = self._run(name, members, net, net_nobn, params, stats)
            values = {p: ZERO_COST[p].finish(raw[p]) for p in members}
            share = (time.perf_counter() - t0 + init_s) / len(members)  # one pass, split evenly
            out.update({p: (values[p], share) for p in members})
            init_s = 0.0
        return out


__all__ = ["DEGENERATE", "ZERO_COST", "ZeroCostProxy", "ZeroCostScorer", "feature_maps",
           "grad_norm_score", "jacov_score", "meco_map", "meco_score", "naswot_kernel",
           "naswot_score", "relu_taps", "snip_score", "zico_score"]
