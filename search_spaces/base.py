"""The search-space interface: genotypes as pure descriptions, modules built from them.

A genotype is a frozen, hashable dataclass (tuples inside) with ``to_str()``; the space parses it
back with ``from_str``, samples it from a PRNG key, mutates it into a new value, and builds a Flax
module from it (STYLE rule 4). Search spaces know nothing of GTNs: the trainer receives a
``Learner`` (``learner()``), never a space.

Built modules follow one calling convention:
``module.apply(variables, x, train, drop_path_scale=1.0)`` -> logits ``[B, num_classes]``, or
``(logits, aux_logits)`` when built with ``auxiliary=True`` and called with ``train=True``.
Drop-path (``drop_path`` > 0 at build time) is active only in train mode and draws from the
'dropout' rng stream. Its per-op drop probability is ``drop_path * drop_path_scale * (i + 1) / n``
for cell i of n: linear in depth as NAO/DARTS; the caller passes training progress as
``drop_path_scale`` (a float or a traced scalar, so the schedule costs no recompilation). The
auxiliary head's parameters exist whenever ``auxiliary=True`` (init in either mode creates them).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar, Iterator, Protocol, Sequence

import flax.linen as nn
import jax

from gtn_nas.errors import ConfigError
from gtn_nas.core.learners import Learner, learner_from_module

InputShape = Sequence[int]  # (H, W, C) of one image


class Genotype(Protocol):
    """A pure, hashable architecture description that serialises to one line."""

    def to_str(self) -> str: ...


@dataclass(frozen=True)
class SizeDefaults:
    """Search-time network size: ``channels`` (C of the first stage) and ``cells`` (N per stage)."""

    channels: int
    cells: int


class SearchSpace(abc.ABC):
    """A cell search space: genotype sampling, parsing, enumeration, mutation and building."""

    name: ClassVar[str]
    defaults: ClassVar[SizeDefaults]
    example: ClassVar[str]  # a valid genotype string, shown in error messages

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """Number of distinct genotypes (encodings, duplicates of isomorphic cells included)."""

    @abc.abstractmethod
    def sample(self, key: jax.Array) -> Genotype:
        """A uniformly random genotype; the same key always gives the same genotype."""

    @abc.abstractmethod
    def from_str(self, s: str) -> Genotype:
        """Parses ``genotype.to_str()`` back; raises ArchitectureError naming what is wrong."""

    @abc.abstractmethod
    def enumerate(self) -> Iterator[Genotype]:
        """Every genotype in a fixed order; raises ArchitectureError if the space is too large."""

    @abc.abstractmethod
    def mutate(self, genotype: Genotype, key: jax.Array) -> Genotype:
        """A new genotype differing from ``genotype`` in exactly one random choice."""

    def neighbours(self, genotype: Genotype, key: jax.Array, limit: int = 32) -> list[Genotype]:
        """Genotypes one choice away from ``genotype``, in a fixed order for a given key: here up
        to ``limit`` distinct mutations; a space small enough to list them all overrides it."""
        out: dict[str, Genotype] = {}
        for k in jax.random.split(key, 4 * limit):
            g = self.mutate(genotype, k)
            out.setdefault(g.to_str(), g)
            if len(out) == limit:
                break
        return list(out.values())

    @abc.abstractmethod
    def build(self, genotype: Genotype, channels: int | None, cells: int | None,
              num_classes: int, input_shape: InputShape, *, bn_momentum: float = 0.0,
              drop_path: float = 0.0, auxiliary: bool = False,
              activation: str = "leaky_relu") -> nn.Module:
        """The network of ``genotype`` (see the module docstring for its calling convention).

        ``channels``/``cells`` default to ``self.defaults`` when None. ``bn_momentum`` is the
        weight of the old statistic (0 in a GTN, e.g. 0.9 for final training).
        """

    def learner(self, genotype: Genotype, channels: int | None = None, cells: int | None = None,
                num_classes: int = 10, input_shape: InputShape = (32, 32, 3)) -> Learner:
        """The genotype's network as a GTN learner: BN momentum 0, no drop-path, no aux head."""
        module = self.build(genotype, channels, cells, num_classes, input_shape)
        return learner_from_module(f"{self.name}:{genotype.to_str()}", module, input_shape)


def check_input_shape(input_shape: InputShape) -> tuple[int, int, int]:
    """Validates an (H, W, C) image shape; the spaces need at least 2x2 after the stem."""
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    return shape  # type: ignore[return-value]
