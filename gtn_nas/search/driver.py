"""A search whose proposals depend on scores (``--strategy evolution | local | cascade``): the
strategy lives here, in the driver, and each evaluation is a plain function of (genotype, proxy,
fidelity, key) whose result goes to the store before the strategy hears of it.

Architecture keys: the n-th distinct genotype the search scores gets index n and the training
key of ``fold_in(PRNGKey(seed), n)`` (as random search's architecture n), so a resumed search,
which replays the same proposals against the stored scores, gives every genotype the key it had.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from gtn_nas.config import VOTE, SearchConfig
from gtn_nas.errors import ConfigError
from gtn_nas.io.runs import write_json
from gtn_nas.search.cascade import CascadeResult, keep_count, run_cascade
from gtn_nas.search.export import write_board
from gtn_nas.search.indices import architecture_keys
from gtn_nas.search.stages import Fidelity, Objective, Stage, parse_stages
from gtn_nas.search.store import COLUMN_PROXIES, Row, Store

ENDED = "cascade.ended"  # store meta: stage index -> genotypes it scored, once it ended


def stages_of(cfg: SearchConfig, sizes: dict[str, Any], steps: int | None,
              real_steps: int | None, gtn_steps: int | None) -> tuple[Stage, ...]:
    """The search's stages: ``--stages`` for a cascade, else one stage of ``--strategy`` on the
    first proxy at the search's sizes."""
    texts = cfg.stages if cfg.strategy == "cascade" else (f"{cfg.strategy}:{cfg.proxies[0]}",)
    stages = parse_stages(texts, channels=sizes["channels"], cells=sizes["cells"],
                          real_steps=real_steps, gtn_steps=steps, vote=cfg.vote)
    for s in stages:
        if s.objective.proxy == "gtn" and gtn_steps and s.objective.fidelity.steps > gtn_steps:
            raise ConfigError(f"stage {s.label}: the GTN's curriculum has {gtn_steps} steps")
    return stages


def own_fidelity(proxy: str, identity: dict[str, Any]) -> Fidelity:
    """The fidelity of ``proxy``'s results-table column: the search's sizes, and its steps for a
    trained proxy."""
    steps = {"gtn": identity["steps"], "real": identity["real_steps"]}.get(proxy)
    return Fidelity(steps, identity["channels"], identity["cells"])


def record_evaluations(store: Store, row: Row, proxies, identity: dict[str, Any]) -> None:
    """Adds a random search's freshly scored ``row`` to the evaluations table, proxy by proxy at
    its own fidelity (what a later strategy or cascade on the same folder finds scored)."""
    by_fidelity: dict[str, dict] = {}
    for p in (*proxies, *COLUMN_PROXIES):
        if p in COLUMN_PROXIES:
            found = (float(row[p]), 0.0, 0.0)
        elif row.get(f"{p}_score") is not None:
            found = (row[f"{p}_score"], row.get(f"{p}_train_s"), row.get(f"{p}_compile_s"))
        else:
            continue
        by_fidelity.setdefault(own_fidelity(p, identity).key, {})[p] = found
    for key, scores in by_fidelity.items():
        store.put_evaluations(row["genotype"], key, row["idx"], scores)


class Evaluations:
    """The search's scores by (genotype, proxy, fidelity): the store's, and each new one scored
    by the scorer of its size and committed before it is returned."""

    def __init__(self, store: Store, scorer_for: Callable[[int, int], Any], seed: int,
                 identity: dict[str, Any], worker: str, extra: tuple[str, ...] = ()):
        self.store, self.scorer_for, self.seed = store, scorer_for, seed
        self.identity, self.worker, self.extra = identity, worker, extra
        self.cache = store.evaluations()
        self.rows: dict[str, Row] = {r["genotype"]: r for r in store.rows()}
        self.index = {g: r["idx"] for g, r in self.rows.items()}
        self.next = max(self.index.values(), default=-1) + 1
        self.scored_now = 0
        self.seconds = 0.0  # spent scoring in this invocation

    def _own(self, proxy: str, objective: Objective) -> bool:
        """Whether ``proxy`` at ``objective``'s fidelity is the search's own (its results-table
        column): the search's sizes, and its steps for a trained proxy."""
        return objective.fidelity == own_fidelity(proxy, self.identity)

    def __call__(self, genotype, objective: Objective, first: bool = False):
        g, key = genotype.to_str(), objective.fidelity.key
        proxies = list(objective.scored) + [p for p in (self.extra if first else ())
                                            if p not in objective.scored]
        missing = [p for p in proxies if (g, p, key) not in self.cache]
        if missing:
            self._score(genotype, g, objective, missing)
        return {p: self.cache[(g, p, key)][0] for p in objective.scored}, 0.0

    def key_of(self, genotype: str, idx: int):
        """The training key of the search's ``idx``-th distinct genotype."""
        return architecture_keys(self.seed, idx)[1]

    def _score(self, genotype, g: str, objective: Objective, missing: list[str]) -> None:
        f = objective.fidelity
        if g not in self.index:
            self.index[g], self.next = self.next, self.next + 1
        idx = self.index[g]
        scorer = self.scorer_for(f.channels, f.cells)
        t0 = time.perf_counter()
        trained = [p for p in missing if p not in COLUMN_PROXIES]
        row = scorer.score(idx, genotype, trained, self.key_of(g, idx), steps=f.steps)
        self.seconds += time.perf_counter() - t0
        self.scored_now += 1
        found = {p: (row[f"{p}_score"], row.get(f"{p}_train_s") or 0.0,
                     row.get(f"{p}_compile_s") or 0.0) for p in trained}
        # params and flops come with every evaluation; flops carries its overhead (building the
        # network, counting), what a benchmark charges a genotype's first score at a fidelity
        overhead = max(0.0, row["seconds"] - sum(t + c for _, t, c in found.values()))
        for p in COLUMN_PROXIES:
            if (g, p, f.key) not in self.cache:
                found[p] = (float(row[p]), overhead if p == "flops" else 0.0, 0.0)
        self.store.put_evaluations(g, f.key, idx, found)
        self.cache.update({(g, p, f.key): v for p, v in found.items()})
        own = [p for p in trained if self._own(p, objective)]
        if (f.channels, f.cells) == (self.identity["channels"], self.identity["cells"]):
            wide = {k: v for k, v in row.items() if not any(
                k.startswith(f"{p}_") for p in trained if p not in own)}
            wide.update(idx=idx, worker=self.worker)
            self.store.put(wide)
            self.rows[g] = {**self.rows.get(g, {}), **wide}


def run(cfg: SearchConfig, rep, run_dir: Path, store: Store, stages: tuple[Stage, ...],
        evaluations: Evaluations, space, started: float) -> tuple[CascadeResult | None, bool]:
    """Runs the stages to the budget; (the result, whether it was interrupted)."""
    ended = {int(k): int(v) for k, v in (store.get_meta(ENDED) or {}).items()}
    stop_at = cfg.time_budget
    first = stages[0].objective

    def evaluate(genotype, objective):
        return evaluations(genotype, objective, first=objective is first)

    def on_stage_end(k: int, n: int) -> None:
        ended[k] = n
        store.set_meta(ENDED, {str(i): v for i, v in ended.items()})

    total = cfg.budget or None
    if total is not None:  # the whole cascade's evaluations: n, n/eta, n/eta^2, ...
        n, total = total, 0
        for _ in stages:
            total, n = total + n, keep_count(n, cfg.eta)
    best: dict[str, Any] = {}
    bar_fields: dict[str, Any] = {}

    def on_score(k: int, genotype, scores) -> None:
        label = stages[k].label
        if best.get("stage", -1) < k:
            best.clear()
            best.update(stage=k, pool=[])
        best["pool"].append(dict(scores))
        u = stages[k].objective.utility(best["pool"])
        bar_fields.update(stage=f"{k + 1}/{len(stages)} {label}", best=float(u.max()))
        if stop_at is not None:
            bar_fields["left"] = f"{max(0.0, stop_at - (time.time() - started)):.0f}s"
        bar.update(1, **bar_fields)

    interrupted = False
    result = None
    with rep.progress("search", total=total) as bar:
        try:
            result = run_cascade(
                stages, space, cfg.seed, evaluate, lambda: time.time() - started,
                budget=cfg.budget or None, time_budget=cfg.time_budget, eta=cfg.eta,
                explore_share=cfg.explore_share, ended=ended, on_stage_end=on_stage_end,
                on_score=on_score,
                strategy_options={"population": cfg.population, "sample": cfg.tournament})
        except KeyboardInterrupt:
            interrupted = True
    return result, interrupted


def leaderboard(result: CascadeResult, rows: dict[str, Row]) -> list[Row]:
    """Every scored genotype once, deepest stage first, each stage's by its objective; a row
    holds its results-table columns, ``stage`` (the deepest it reached) and per stage its
    score (a vote: counted over that stage's architectures)."""
    board: list[Row] = []
    placed: set[str] = set()
    utilities: dict[str, dict[str, float]] = {}
    for s in result.stages:
        u = s.objective.utility(s.scores) if s.scores else []
        for genotype, v in zip(s.genotypes, u):
            utilities.setdefault(genotype.to_str(), {})[s.label] = float(v)
    for s in reversed(result.stages):
        for genotype, _ in s.ranked():
            g = genotype.to_str()
            if g in placed:
                continue
            placed.add(g)
            board.append({**rows.get(g, {"genotype": g}), "stage": s.label,
                          "stage_scores": utilities[g]})
    return board


def export(run_dir: Path, cfg: SearchConfig, result: CascadeResult, evaluations: Evaluations,
           identity: dict, wall: float) -> tuple[dict[str, Any], list[Row]]:
    """Writes leaderboard.csv, top/NN.json and summary.json of a strategy search; returns the
    summary and the leaderboard."""
    board = leaderboard(result, evaluations.rows)
    labels = [s.label for s in result.stages]
    lines = [["rank", "index", "arch", "space", "params", "flops", "stage"] + labels]
    for rank, r in enumerate(board, start=1):
        lines.append([rank, r.get("idx"), r["genotype"], r.get("space"), r.get("params"),
                      r.get("flops"), r["stage"]] + [r["stage_scores"].get(x) for x in labels])
    write_board(run_dir, lines, [{
        "rank": rank, "ranked_by": r["stage"], "arch": r["genotype"],
        "space": identity["space"], "scores": r["stage_scores"], "stage": r["stage"],
        "params": r.get("params"), "flops": r.get("flops"),
        "sizes": {k: identity[k] for k in ("channels", "cells", "input_shape")},
        "dataset": identity["dataset"],
        "provenance": {"strategy": cfg.strategy, "seed": identity["seed"], "index": r.get("idx"),
                       "gtn_run": identity["gtn_run"], "gtn_step": identity["gtn_step"]}}
        for rank, r in enumerate(board[:cfg.top_k], start=1)])
    best = result.best()
    summary = {
        "search_dir": str(run_dir), "space": identity["space"], "dataset": identity["dataset"],
        "strategy": cfg.strategy, "stages": labels, "eta": cfg.eta,
        "gtn_run": identity["gtn_run"], "gtn_step": identity["gtn_step"],
        "channels": identity["channels"], "cells": identity["cells"],
        "best": best,
        "best_arch": best["genotype"] if best else None,
        "per_stage": [{"stage": s.label, "scored": len(s.genotypes), "complete": s.complete}
                      for s in result.stages],
        "architectures": len(board), "scored_now": evaluations.scored_now,
        "scoring_seconds": round(evaluations.seconds, 1), "wall_seconds": round(wall, 1),
        "time_budget": cfg.time_budget, "budget": cfg.budget or None,
        "stalled": result.stalled or None,
        "leaderboard": str(run_dir / "leaderboard.csv"),
    }
    if VOTE in cfg.proxies:
        summary["vote"] = list(cfg.vote)
    write_json(run_dir / "summary.json", summary)
    return summary, board


__all__ = ["ENDED", "Evaluations", "export", "leaderboard", "own_fidelity", "record_evaluations",
           "run", "stages_of"]
