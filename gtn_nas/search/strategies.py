"""Search strategies as ask/tell objects: ``ask()`` proposes a genotype, ``tell(genotype,
scores)`` reports its scores at the stage's objective. A strategy holds no evaluator and no
clock, so the driver (``search.cascade``) decides what is scored where and when, and a resumed
search rebuilds a strategy's state by replaying it against the stored scores: every choice comes
from keys of the search seed, and every score is the stored one, so the replay proposes the same
genotypes in the same order.

- ``random``: architecture i of the search, ``space.sample(fold_in(PRNGKey(seed), i))``;
- ``evolution``: regularized evolution (Real et al. 2019): the first ``population`` proposals are
  random, then each child mutates the best of ``sample`` members drawn from the population, and
  joins it as the oldest member leaves;
- ``local``: best-improvement local search: score every neighbour of the current genotype, move
  to the best if it beats the current one, else restart from the next random genotype.
"""

from __future__ import annotations

import abc
import collections
from typing import Any, Mapping

import jax
import numpy as np

from gtn_nas.search.indices import architecture_keys
from gtn_nas.search.stages import Objective

Scores = Mapping[str, float]
_EVOLUTION_SALT, _LOCAL_SALT = 2**31 - 3, 2**31 - 4  # key indices no architecture has


class Strategy(abc.ABC):
    name = "strategy"

    def __init__(self, space, objective: Objective, seed: int, archs: tuple[str, ...] = ()):
        self.space, self.objective, self.seed, self.archs = space, objective, seed, archs
        self._draws = 0  # random draws so far: architecture i of the search is draw i

    def random(self):
        """The next of the search's random architectures (or of its ``--arch`` list; None when
        that is used up)."""
        i = self._draws
        self._draws += 1
        if self.archs:
            return self.space.from_str(self.archs[i]) if i < len(self.archs) else None
        return self.space.sample(architecture_keys(self.seed, i)[0])

    @abc.abstractmethod
    def ask(self) -> Any:
        """The next genotype to score (None: nothing left to propose)."""

    def tell(self, genotype, scores: Scores) -> None:
        """``genotype``'s scores at the objective (the answer to the last ``ask``)."""

    def state(self) -> dict[str, Any]:
        """What the strategy's choices depend on now, for tests and progress."""
        return {"draws": self._draws}


class RandomSearch(Strategy):
    name = "random"

    def ask(self):
        return self.random()


class Evolution(Strategy):
    """Regularized evolution: tournament selection, mutation, ageing."""

    name = "evolution"

    def __init__(self, space, objective, seed, archs=(), population: int = 20, sample: int = 5):
        super().__init__(space, objective, seed, archs)
        self.size, self.sample = population, min(sample, population)
        self.population: collections.deque = collections.deque()  # (genotype, scores), oldest first
        self.key = jax.random.fold_in(jax.random.PRNGKey(seed), _EVOLUTION_SALT)
        self.cycle = 0

    def ask(self):
        if len(self.population) < self.size and self.cycle == 0:
            return self.random()
        k_pick, k_mutate = jax.random.split(jax.random.fold_in(self.key, self.cycle))
        self.cycle += 1
        members = list(self.population)
        drawn = np.asarray(jax.random.choice(k_pick, len(members), (self.sample,), replace=False))
        order = self.objective.order([members[int(i)][1] for i in drawn])
        parent = members[int(drawn[order[0]])][0]
        return self.space.mutate(parent, k_mutate)

    def tell(self, genotype, scores):
        self.population.append((genotype, dict(scores)))
        if len(self.population) > self.size:
            self.population.popleft()  # the oldest dies, however good

    def state(self):
        return {**super().state(), "cycle": self.cycle,
                "population": [g.to_str() for g, _ in self.population]}


class LocalSearch(Strategy):
    """Best-improvement local search with random restarts."""

    name = "local"

    def __init__(self, space, objective, seed, archs=()):
        super().__init__(space, objective, seed, archs)
        self.key = jax.random.fold_in(jax.random.PRNGKey(seed), _LOCAL_SALT)
        self.current: tuple[Any, dict] | None = None
        self.queue: list = []
        self.told: list[tuple[Any, dict]] = []
        self.moves = self.restarts = 0
        self._starting = False

    def ask(self):
        if self.current is None:
            self._starting = True
            return self.random()
        if not self.queue:  # the neighbourhood is scored: move or restart
            self._step()
            return self.ask()
        return self.queue.pop(0)

    def _step(self) -> None:
        pool = [self.current] + self.told
        best = pool[self.objective.order([s for _, s in pool])[0]]
        if best is self.current:
            self.current, self.restarts = None, self.restarts + 1
        else:
            self.moves += 1
            self._enter(best)

    def _enter(self, entry) -> None:
        self.current, self.told = entry, []
        key = jax.random.fold_in(self.key, self.moves + self.restarts)
        self.queue = list(self.space.neighbours(entry[0], key))

    def tell(self, genotype, scores):
        if self._starting:
            self._starting = False
            self._enter((genotype, dict(scores)))
        else:
            self.told.append((genotype, dict(scores)))

    def state(self):
        return {**super().state(), "moves": self.moves, "restarts": self.restarts,
                "current": None if self.current is None else self.current[0].to_str()}


def make_strategy(name: str, space, objective: Objective, seed: int, archs=(), **options):
    """The strategy called ``name``; ``options``: evolution's ``population`` and ``sample``."""
    if name == "random":
        return RandomSearch(space, objective, seed, archs)
    if name == "evolution":
        return Evolution(space, objective, seed, archs, **options)
    if name == "local":
        return LocalSearch(space, objective, seed, archs)
    raise ValueError(f"unknown strategy {name!r}")


__all__ = ["Evolution", "LocalSearch", "RandomSearch", "Strategy", "make_strategy"]
