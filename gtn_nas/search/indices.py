"""Which architecture is index i of a search: one record, always.

With ``k_arch, k_train = split(fold_in(PRNGKey(seed), i))`` architecture i's genotype is
``space.sample(k_arch)`` (or the i-th of ``--arch`` strings), and every proxy trains a fresh
learner of *that* genotype from the initial weights of ``k_train`` (the official code paired one
architecture's genotype with another's score, gtn-spec 3.2). Shard s of n scores i % n == s.
"""

from __future__ import annotations

import itertools
from typing import Iterator

import jax

from gtn_nas.config import SearchConfig


def architecture_keys(seed: int, index: int) -> tuple[jax.Array, jax.Array]:
    """(k_arch, k_train) of architecture ``index``: split(fold_in(PRNGKey(seed), index))."""
    k_arch, k_train = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), index))
    return k_arch, k_train


def zero_cost_batch_key(seed: int) -> jax.Array:
    """The key of a search's one zero-cost training batch: fold_in(PRNGKey(seed), 2^31 - 1),
    an index no architecture has (budgets stop at 10^7)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 2**31 - 1)


def bn_batch_key(seed: int) -> jax.Array:
    """The key of a search's one real batch for ``--gtn-bn real``: another index no
    architecture has."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 2**31 - 2)


def genotype_at(space, cfg: SearchConfig, index: int):
    """The genotype of architecture ``index`` (sampled, or the index-th ``--arch`` string)."""
    if cfg.archs:
        return space.from_str(cfg.archs[index])
    return space.sample(architecture_keys(cfg.seed, index)[0])


def index_stop(cfg: SearchConfig) -> int | None:
    """One past the last architecture index of the search (None: no count limit)."""
    return (cfg.budget or len(cfg.archs)) or None


def indices(cfg: SearchConfig, shard: int = 0, num_shards: int = 1) -> Iterator[int]:
    """This shard's architecture indices, in order: i % num_shards == shard."""
    stop = index_stop(cfg)
    every = range(stop) if stop else itertools.count()
    return itertools.islice(every, shard, None, num_shards)


__all__ = ["architecture_keys", "genotype_at", "index_stop", "indices", "zero_cost_batch_key"]
