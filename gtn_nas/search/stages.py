"""What a search stage scores by: a proxy at a fidelity, and how its scores rank architectures.

A stage reads ``[STRATEGY:]PROXY[@STEPS][/CxN]``: ``evolution:vote`` (regularized evolution on the
zero-cost vote at the search's sizes), ``real@288/4x1`` (288 real-data SGD steps on the cell at
C=4, N=1), ``gtn@32``. Only a cascade's first stage proposes architectures (its strategy); each
later stage re-scores the best 1/eta of the stage before it. The *fidelity* (steps, channels,
cells) is part of every stored score, so one genotype's real-data score at 32 steps and at 288
steps are two rows of the store, and a genotype is never scored twice at one fidelity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from gtn_nas.config import STAGE, TRAINED_PROXIES, VOTE, ZERO_COST_PROXIES
from gtn_nas.errors import ConfigError
from gtn_nas.search.vote import log_rank_vote

STRATEGIES = ("random", "evolution", "local")  # the proposers a first stage can run



@dataclass(frozen=True)
class Fidelity:
    """How costly (and how faithful) one score is: training steps (None for a proxy that does
    not train) and the scored network's size."""

    steps: int | None
    channels: int
    cells: int

    @property
    def key(self) -> str:
        """The store's spelling: ``s288.c4n1``, ``c16n5``."""
        size = f"c{self.channels}n{self.cells}"
        return size if self.steps is None else f"s{self.steps}.{size}"


@dataclass(frozen=True)
class Objective:
    """A proxy (or a vote over ``parts``) at one fidelity; ``utility`` ranks a set of
    architectures by it (a vote is relative to the set it ranks: AZ-NAS's log-rank)."""

    proxy: str
    fidelity: Fidelity
    parts: tuple[str, ...] = ()  # a vote's proxies

    @property
    def scored(self) -> tuple[str, ...]:
        """The proxies an evaluation at this objective runs."""
        return self.parts if self.proxy == VOTE else (self.proxy,)

    @property
    def label(self) -> str:
        f = self.fidelity
        steps = "" if f.steps is None else f"@{f.steps}"
        return f"{self.proxy}{steps}/{f.channels}x{f.cells}"

    def utility(self, scores: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Higher is better: [len(scores)], each a mapping of this objective's proxies."""
        m = np.array([[s[p] for p in self.scored] for s in scores], np.float64)
        m = m.reshape(len(scores), len(self.scored))
        return log_rank_vote(m) if self.proxy == VOTE else m[:, 0]

    def order(self, scores: Sequence[Mapping[str, float]]) -> list[int]:
        """Indices of ``scores``, best first (ties: earlier first)."""
        u = self.utility(scores)
        return sorted(range(len(u)), key=lambda i: (-u[i], i))


@dataclass(frozen=True)
class Stage:
    strategy: str | None  # the first stage's proposer; None for a later (selection) stage
    objective: Objective

    @property
    def label(self) -> str:
        head = f"{self.strategy}:" if self.strategy else ""
        return head + self.objective.label


def parse_stages(texts: Sequence[str], *, channels: int, cells: int, real_steps: int | None,
                 gtn_steps: int | None, vote: Sequence[str]) -> tuple[Stage, ...]:
    """Stages from their spellings; sizes default to the search's, steps to ``real_steps`` (real)
    or ``gtn_steps`` (gtn), a vote's parts to ``vote``."""
    stages = []
    for i, text in enumerate(texts):
        t = str(text).strip().lower().replace(" ", "")
        m = STAGE.match(t)
        if not m:
            raise ConfigError(f"cannot read stage {text!r}: write [STRATEGY:]PROXY[@STEPS][/CxN], "
                              "e.g. evolution:vote or real@288/4x1")
        strategy, proxy = m["strategy"], m["proxy"]
        if strategy is not None and strategy not in STRATEGIES:
            raise ConfigError(f"stage {text!r}: unknown strategy {strategy!r}; choose from "
                              f"{', '.join(STRATEGIES)}")
        if i > 0 and strategy is not None:
            raise ConfigError(f"stage {text!r}: only the first stage proposes architectures; "
                              "a later stage re-scores the best of the stage before it")
        known = TRAINED_PROXIES + ("params", "flops") + ZERO_COST_PROXIES + (VOTE,)
        if proxy not in known:
            raise ConfigError(f"stage {text!r}: unknown proxy {proxy!r}; choose from "
                              f"{', '.join(known)}")
        steps = int(m["steps"]) if m["steps"] else None
        if proxy in TRAINED_PROXIES:
            steps = steps or (real_steps if proxy == "real" else gtn_steps)
            if not steps:
                raise ConfigError(f"stage {text!r}: give its steps, e.g. {proxy}@32")
        elif steps is not None:
            raise ConfigError(f"stage {text!r}: {proxy} does not train; it takes no @STEPS")
        size = (int(m["channels"]), int(m["cells"])) if m["channels"] else (channels, cells)
        if min(size) < 1:
            raise ConfigError(f"stage {text!r}: channels and cells must be positive")
        parts = tuple(vote) if proxy == VOTE else ()
        if proxy == VOTE and len(parts) < 2:
            raise ConfigError(f"stage {text!r}: a vote needs at least 2 proxies (--vote)")
        stages.append(Stage(strategy or ("random" if i == 0 else None),
                            Objective(proxy, Fidelity(steps, *size), parts)))
    if not stages:
        raise ConfigError("give at least one stage")
    labels = [s.objective.label for s in stages]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"a stage is listed twice: {', '.join(labels)}")
    return tuple(stages)


__all__ = ["Fidelity", "Objective", "STAGE", "STRATEGIES", "Stage", "parse_stages"]
