"""A multi-fidelity cascade: the first stage's strategy proposes, each later stage re-scores the
best 1/eta of the stage before it at a costlier objective (successive halving), and the pick is
the best architecture of the deepest stage that scored any.

The driver knows nothing of networks, stores or clocks of its own: ``evaluate(genotype,
objective)`` returns ``(scores, seconds)`` (a stored score is returned at no cost), ``clock()``
the seconds this invocation has used (the wall clock in a search, a simulated one in
``benchmarks/search_quality.py``). Budgets:

- ``budget`` architectures: the first stage scores that many distinct genotypes, stage k the best
  ceil(n_{k-1} / eta) of stage k-1; the same command always ends with the same pick, however
  often it was killed and resumed;
- ``time_budget`` seconds: the first stage proposes until ``explore_share`` of it is used, the
  later stages re-score best first until all of it is (a later stage starts no evaluation that
  its own mean cost so far says would end past the budget). Where a stage ended is reported through
  ``on_stage_end`` and handed back as ``ended`` on a resume, so a resumed search replays the same
  first stage (from the store, at no cost) and goes on where it stopped.

A single-stage search (``--strategy evolution``) is a cascade of one stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from gtn_nas.search.stages import Objective, Stage
from gtn_nas.search.strategies import make_strategy

STALL_LIMIT = 500  # proposals in a row that are all already scored: the space is used up


@dataclass
class StageResult:
    label: str
    objective: Objective
    genotypes: list = field(default_factory=list)  # in the order they were scored
    scores: list[dict[str, float]] = field(default_factory=list)
    complete: bool = False  # ran to its count, not stopped by time

    def ranked(self) -> list[tuple[Any, dict[str, float]]]:
        order = self.objective.order(self.scores) if self.scores else []
        return [(self.genotypes[i], self.scores[i]) for i in order]


@dataclass
class CascadeResult:
    stages: list[StageResult]
    evaluations: int  # evaluations this invocation asked for, stored ones included
    stalled: bool = False

    @property
    def deepest(self) -> int | None:
        """The last stage with a score (the one that chooses the pick)."""
        return max((i for i, s in enumerate(self.stages) if s.scores), default=None)

    def best(self) -> dict[str, Any] | None:
        """The pick: {genotype, scores by stage label, stage}."""
        k = self.deepest
        if k is None:
            return None
        genotype, _ = self.stages[k].ranked()[0]
        g = genotype.to_str()
        scores = {s.label: s.scores[[x.to_str() for x in s.genotypes].index(g)]
                  for s in self.stages if any(x.to_str() == g for x in s.genotypes)}
        return {"genotype": g, "scores": scores, "stage": self.stages[k].label, "stage_index": k}


def keep_count(n: int, eta: float) -> int:
    """How many of ``n`` go on to the next stage: ceil(n / eta), at least 1 where n > 0."""
    return max(1, math.ceil(n / eta)) if n > 0 else 0


def run_cascade(stages: Sequence[Stage], space, seed: int,
                evaluate: Callable[[Any, Objective], tuple[Mapping[str, float], float]],
                clock: Callable[[], float], *, budget: int | None, time_budget: float | None,
                eta: float = 4.0, explore_share: float = 0.5, archs: tuple[str, ...] = (),
                ended: Mapping[int, int] | None = None,
                on_stage_end: Callable[[int, int], None] | None = None,
                on_score: Callable[[int, Any, Mapping[str, float]], None] | None = None,
                should_stop: Callable[[], bool] | None = None,
                strategy_options: Mapping[str, Any] | None = None) -> CascadeResult:
    """Runs the cascade to its budget (see the module docstring); ``ended``: stage index ->
    genotypes it scored, for stages a previous invocation finished."""
    ended = dict(ended or {})
    first = stages[0]
    strategy = make_strategy(first.strategy, space, first.objective, seed, archs,
                             **(strategy_options or {}) if first.strategy == "evolution" else {})
    results = [StageResult(s.label, s.objective) for s in stages]
    calls, stalled = 0, False
    stop = should_stop or (lambda: False)

    def out_of_time(limit: float | None) -> bool:
        return limit is not None and clock() >= limit

    # -- the first stage: the strategy proposes --------------------------------------------------
    r0 = results[0]
    seen: set[str] = set()
    target = ended.get(0, budget or None)
    share = explore_share if len(stages) > 1 else 1.0  # one stage has all of the time
    limit0 = None if 0 in ended or time_budget is None else time_budget * share
    stall = 0
    while (target is None or len(r0.genotypes) < target) and not out_of_time(limit0) \
            and not stop():
        genotype = strategy.ask()
        if genotype is None:
            break
        scores, _ = evaluate(genotype, first.objective)
        calls += 1
        strategy.tell(genotype, scores)
        g = genotype.to_str()
        if g in seen:
            stall += 1
            if stall >= STALL_LIMIT:
                stalled = True
                break
            continue
        stall = 0
        seen.add(g)
        r0.genotypes.append(genotype)
        r0.scores.append(dict(scores))
        if on_score is not None:
            on_score(0, genotype, scores)
    r0.complete = target is not None and len(r0.genotypes) >= target or stalled or (
        not stop() and limit0 is not None and out_of_time(limit0))
    if r0.complete and 0 not in ended and on_stage_end is not None:
        on_stage_end(0, len(r0.genotypes))

    # -- later stages: the best 1/eta of the stage before, best first ----------------------------
    for k in range(1, len(stages)):
        prev = results[k - 1]
        if not prev.complete or stop():
            break
        rk = results[k]
        spent: list[float] = []  # seconds of this stage's evaluations that were scored now
        for genotype, _ in prev.ranked()[:keep_count(len(prev.genotypes), eta)]:
            if out_of_time(time_budget) or stop():
                break
            if time_budget is not None and spent and \
                    clock() + sum(spent) / len(spent) > time_budget:
                break  # the next one would not finish in time: the budget bounds the search
            t0 = clock()
            scores, _ = evaluate(genotype, stages[k].objective)
            if clock() - t0 > 1e-3:
                spent.append(clock() - t0)
            calls += 1
            rk.genotypes.append(genotype)
            rk.scores.append(dict(scores))
            if on_score is not None:
                on_score(k, genotype, scores)
        rk.complete = len(rk.genotypes) == keep_count(len(prev.genotypes), eta)
    return CascadeResult(results, calls, stalled)


__all__ = ["CascadeResult", "StageResult", "keep_count", "run_cascade"]
