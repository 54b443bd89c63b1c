"""Search-space learners for meta-training: a different architecture at every outer step.

``space_source(name, image_shape, num_classes, ...)`` turns a search space into the trainer's
``LearnerSource``: ``sample(key)`` draws an architecture encoding (a fresh uniform genotype per
outer step, or one of a fixed pool of ``pool`` genotypes), and ``build(arch)``, called
inside the jitted meta-step, returns the learner for that encoding.

Compilation. The meta-step is jitted once per distinct *type* of ``arch``:
- ``nb201``: ``arch`` is the int32 [6] op-index array of ``search_spaces.nb201.encode`` and the
  learner is the weight-sharing supernet (``nb201.shared_learner``) in ``switch`` mode: each edge
  runs only its chosen op (``lax.switch`` on the traced index), which is each genotype's exact
  function. Every architecture of the 15,625 runs in the same compiled program: one compilation
  for the whole meta-training run. The supernet's ``onehot`` mode (every op computed, weighted
  sums) was 2.7x slower per second-order meta-step on 2 cores (C=4, T=4, six architectures,
  benchmarks/RESULTS.md, Profile), where for one first-order SGD step it is the faster one. Its
  layers are ``gtn_meta`` (``search_spaces.ops``): convolutions as slices and matmuls on CPU,
  which halved the second-order step there, where XLA's op is the faster one for the search's
  first-order steps.
- ``micro``: the wiring of a micro cell changes its parameter shapes, so no shared program exists
  (see ``search_spaces.micro``). ``arch`` is a ``StaticArch``: a pytree with no array leaves that
  carries the genotype in its tree structure, so jit compiles once per distinct genotype and
  reuses the cached program when the genotype recurs. ``--arch-pool P`` bounds the number of
  compilations by P; without a pool every outer step compiles a new program.

The trainer itself never imports ``search_spaces``: ``gtn_nas.meta.gtn.build_learner_source``
imports this module only for the NAS learners.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gtn_nas.core.learners import LearnerSource
from gtn_nas.errors import ConfigError

POOL_SALT = 0x5EED  # fold_in constant for the architecture pool, apart from every outer-step key
NB201_MODE = "switch"  # the supernet mode of meta-training (see the module docstring)
NB201_LAYERS = "gtn_meta"  # and its layers: convolutions as slices on CPU (ditto)


@jax.tree_util.register_static
@dataclass(frozen=True)
class StaticArch:
    """A genotype passed through jit as static structure (no leaves): one program per genotype."""

    genotype: Any


def _pool_genotypes(space, seed: int, size: int) -> list[Any]:
    """The fixed pool: genotype j is ``space.sample(fold_in(fold_in(PRNGKey(seed), SALT), j))``."""
    root = jax.random.fold_in(jax.random.PRNGKey(seed), POOL_SALT)
    return [space.sample(jax.random.fold_in(root, j)) for j in range(size)]


def _pick(key: jax.Array, n: int) -> int:
    return int(jax.random.randint(key, (), 0, n))


def space_source(space_name: str, image_shape: Sequence[int], num_classes: int, *,
                 channels: int | None = None, cells: int = 1, pool: int = 0,
                 seed: int = 0) -> LearnerSource:
    """The meta-training learner drawn from the search space ``space_name`` (nb201 | micro).

    Sizes: ``channels`` (default: the space's search-time C) and ``cells`` per stage; ``pool``
    > 0 draws from that many genotypes fixed by ``seed`` instead of a fresh one every step.
    """
    from search_spaces import get_space, nb201

    space = get_space(space_name)
    channels = int(channels or space.defaults.channels)
    cells = int(cells)
    shape = tuple(int(d) for d in image_shape)
    genotypes = _pool_genotypes(space, seed, pool) if pool else None
    name = f"{space.name}(C={channels},N={cells}" + (f",pool={pool})" if pool else ")")

    if space.name == "nb201":
        # Building the supernet's module here validates the sizes before anything is traced.
        nb201.build_shared(channels, cells, num_classes, shape)
        pool_codes = None if genotypes is None else np.stack([nb201.encode(g) for g in genotypes])

        def sample(key: jax.Array) -> jax.Array:
            if pool_codes is not None:
                return jnp.asarray(pool_codes[_pick(key, len(pool_codes))])  # int32 [6]
            return jnp.asarray(nb201.encode(space.sample(key)))  # int32 [6]

        def build(arch: jax.Array):
            return nb201.shared_learner(arch, channels, cells, num_classes, shape, mode=NB201_MODE,
                                        layers=NB201_LAYERS)

        return LearnerSource(name, build, sample)

    if space.name == "micro":
        space.build(space.from_str(space.example), channels, cells, num_classes, shape)
        learners: dict[Any, Any] = {}  # one Learner per genotype: its closures stay hashable

        def sample(key: jax.Array) -> StaticArch:
            if genotypes is not None:
                return StaticArch(genotypes[_pick(key, len(genotypes))])
            return StaticArch(space.sample(key))

        def build(arch: StaticArch):
            if not isinstance(arch, StaticArch):
                raise ConfigError("micro learners take a StaticArch from their source's sample()")
            if arch.genotype not in learners:
                learners[arch.genotype] = space.learner(arch.genotype, channels, cells,
                                                        num_classes, shape)
            return learners[arch.genotype]

        return LearnerSource(name, build, sample)

    raise ConfigError(f"no meta-training learner for search space {space.name!r}")


__all__ = ["StaticArch", "space_source", "POOL_SALT"]
