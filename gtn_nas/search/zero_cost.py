"""Zero-cost proxies: scores of an untrained network from one batch, without training.

Definitions as in NASLib / NAS-Bench-Suite-Zero (Abdelfattah et al. 2021, Mellor et al. 2021), on
the benchmark's own network: NAS-Bench-201's ReLU-conv-BN ops, plain convolutions and linear
layer with PyTorch's default init, BN in train mode (batch statistics), freshly initialised from
the architecture's key. "Weights" are the conv and linear kernels (not BN, not biases).

- ``synflow``: every BN removed, every parameter made absolute, an all-ones input of batch 1, R the
  sum of the logits; Σ|θ·∂R/∂θ|. In float64 by default (as NASLib), since the products of absolute
  weights along paths overflow float32 in deep cells; ``synflow_dtype`` chooses.
- ``naswot``: c = 1[ReLU input > 0] per image for every ReLU of the network (each flattened),
  K = Σ_ReLUs c·cᵀ + (1−c)(1−c)ᵀ over the batch; log|det K|.
- ``jacov``: J = ∂(Σ logits)/∂x per image, flattened; λ the eigenvalues of J's correlation
  matrix; −Σ (log(λ + 1e-5) + 1/(λ + 1e-5)).
- ``snip``: Σ|θ·∂L/∂θ|, L the mean cross-entropy of the batch.
- ``grad_norm``: Σ over weight tensors of ‖∂L/∂θ‖₂.

naswot, jacov, snip and grad_norm come from one forward pass (and two reverse passes), synflow
from its own; see ``ZeroCostScorer`` for how they run. A score that is not finite (a singular K,
a constant Jacobian: networks whose output ignores the input) is stored as ``DEGENERATE``, below
every finite score.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from gtn_nas.core.images import normalize
from gtn_nas.core.metrics import nll
from gtn_nas.config import ZERO_COST_PROXIES as ZERO_COST
from gtn_nas.errors import ConfigError
from gtn_nas.search.store import DEGENERATE
JACOV_EPS = 1e-5
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


class ZeroCostScorer:
    """The zero-cost proxies of NB201 genotypes at one size, on one fixed batch of a search.

    ``images``/``labels``: the training split (uint8 NHWC, int); the batch is ``batch_size`` of
    them drawn with ``batch_key``. ``score(genotype, key, proxies)`` -> {proxy: (score, seconds)},
    the genotype's own network initialised from ``key``.

    Run eagerly, op by op: XLA compiles each primitive once per shape and every later
    architecture reuses it, so no architecture compiles a program of its own (the first one pays
    for the primitives), and each computes only its own ops. Measured on 2 cores at C=16, N=5,
    batch 64 (benchmarks/RESULTS.md, Zero-cost proxies): one jitted one-hot supernet program
    for all architectures compiled in 153 s and took 15.6 s per architecture for naswot, jacov,
    snip and grad_norm; the eager exact networks 1.9 s.
    """

    def __init__(self, channels: int, cells: int, num_classes: int, input_shape, images, labels,
                 mean, std, batch_size: int, batch_key: jax.Array,
                 synflow_dtype: str = "float64"):
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
        pick = np.asarray(jax.random.choice(batch_key, n, (batch_size,), replace=False))
        self.x = normalize(np.asarray(images)[pick], mean, std)
        self.y = jnp.asarray(np.asarray(labels)[pick], jnp.int32)

    def networks(self, genotype):
        """(the benchmark's network of ``genotype``, the same without BN)."""
        from search_spaces import get_space

        space = get_space("nb201")
        return (space.build(genotype, **self.sizes, layers="benchmark"),
                space.build(genotype, **self.sizes, layers="benchmark_nobn"))

    def batch_scores(self, net, params, stats, arch=None) -> dict[str, Any]:
        """naswot's K, the input Jacobian, snip and grad_norm from one forward pass. ``arch``:
        the op indices when ``net`` is the one-hot supernet (``nb201.build_shared``)."""
        from search_spaces.nb201 import arch_weights

        extra = () if arch is None else (arch,)

        def forward(params, x):
            logits, cols = net.apply({"params": params, "batch_stats": stats}, x, *extra,
                                     train=True, mutable=["batch_stats", "relu_inputs"])
            return logits, cols["relu_inputs"]

        logits, vjp, relu_inputs = jax.vjp(forward, params, self.x, has_aux=True)
        k = naswot_kernel(relu_taps(relu_inputs, None if arch is None else arch_weights(arch)))
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

    def score(self, genotype, key: jax.Array, proxies: Sequence[str]) -> dict[str, tuple]:
        unknown = [p for p in proxies if p not in ZERO_COST]
        if unknown:
            raise ConfigError(f"not zero-cost proxies: {', '.join(unknown)}")
        t0 = time.perf_counter()
        net, net_nobn = self.networks(genotype)
        variables = net.init(key, self.x[:2], train=True)
        params, stats = variables["params"], variables.get("batch_stats", {})
        init_s = time.perf_counter() - t0
        out: dict[str, tuple] = {}
        batch = [p for p in proxies if p != "synflow"]
        if batch:
            t0 = time.perf_counter()
            raw = jax.device_get(self.batch_scores(net, params, stats))
            finish = {"naswot": naswot_score, "jacov": jacov_score}
            values = {p: finish.get(p, _finite)(raw[p]) for p in batch}
            share = (time.perf_counter() - t0 + init_s) / len(batch)  # one pass, split evenly
            out.update({p: (values[p], share) for p in batch})
            init_s = 0.0
        if "synflow" in proxies:
            t0 = time.perf_counter()
            with jax.enable_x64(self.synflow_dtype == "float64"):
                value = _finite(jax.device_get(self.synflow(net_nobn, params)))
            out["synflow"] = (value, time.perf_counter() - t0 + init_s)
        return out


def _finite(v) -> float:
    v = float(v)
    return v if math.isfinite(v) else DEGENERATE


__all__ = ["DEGENERATE", "ZERO_COST", "ZeroCostScorer", "grad_norm_score", "jacov_score",
           "naswot_kernel", "naswot_score", "relu_taps", "snip_score"]
