"""What a search leaves for its user, rewritten from the database after every invocation:
``leaderboard.csv``, ``top/NN.json`` (what ``gtn-nas retrain --arch`` reads) and the summary."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from gtn_nas.config import VOTE, SearchConfig
from gtn_nas.io.runs import write_atomic, write_json
from gtn_nas.search.store import PROXIES, SCORED_PROXIES, Row, score_column
from gtn_nas.search.vote import with_vote


def proxy_columns(rows: list[Row]) -> list[str]:
    """The proxies besides params and flops (always columns) that have scores in ``rows``."""
    return [p for p in SCORED_PROXIES if any(r.get(f"{p}_score") is not None for r in rows)]


def leaderboard(rows: list[Row], ranked_by: str) -> list[Row]:
    """Rows holding a ``ranked_by`` score, best first (ties: lower index first)."""
    col = score_column(ranked_by)
    scored = [r for r in rows if r.get(col) is not None]
    return sorted(scored, key=lambda r: (-r[col], r["idx"]))


def voted(rows: list[Row], cfg: SearchConfig) -> list[Row]:
    """``rows`` with their ``vote`` score where the search has one (gtn_nas.search.vote)."""
    return with_vote(rows, cfg.vote) if VOTE in cfg.proxies else rows


def export(run_dir: Path, rows: list[Row], cfg: SearchConfig, identity: dict) -> list[Row]:
    """Writes leaderboard.csv and top/NN.json from ``rows``; returns the leaderboard."""
    rows = voted(rows, cfg)
    board = leaderboard(rows, cfg.proxies[0])
    proxies = proxy_columns(rows)
    timed = [p for p in proxies if p != VOTE]  # a vote is counted, not run
    header = (["rank", "index", "arch", "space", "params", "flops"] + proxies
              + [f"{p}_{k}" for p in timed for k in ("train_s", "compile_s")] + ["seconds"])
    lines = [header]
    for rank, r in enumerate(board, start=1):
        lines.append([rank, r["idx"], r["genotype"], r["space"], r["params"], r["flops"]]
                     + [r.get(f"{p}_score") for p in proxies]
                     + [r.get(f"{p}_{k}") for p in timed for k in ("train_s", "compile_s")]
                     + [r.get("seconds")])
    write_board(run_dir, lines, [top_record(r, rank, cfg, identity)
                                 for rank, r in enumerate(board[:cfg.top_k], start=1)])
    return board


def write_board(run_dir: Path, lines: list[list], records: list[dict[str, Any]]) -> None:
    """``leaderboard.csv`` from ``lines`` (header first; None written empty) and ``top/NN.json``
    from ``records`` (best first), replacing the ones there."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(
        [["" if v is None else v for v in line] for line in lines])
    write_atomic(run_dir / "leaderboard.csv", buf.getvalue())
    top = run_dir / "top"
    top.mkdir(exist_ok=True)
    for old in top.glob("*.json"):
        old.unlink()
    width = max(2, len(str(len(records))))
    for rank, record in enumerate(records, start=1):
        write_json(top / f"{rank:0{width}d}.json", record)


def top_record(r: Row, rank: int, cfg: SearchConfig, identity: dict) -> dict[str, Any]:
    """What ``top/NN.json`` holds: the genotype, its space and sizes, scores, provenance."""
    scores = {p: r.get(score_column(p)) for p in PROXIES if r.get(score_column(p)) is not None}
    return {
        "rank": rank, "ranked_by": cfg.proxies[0], "arch": r["genotype"], "space": r["space"],
        "scores": scores, "params": r["params"], "flops": r["flops"],
        "sizes": {k: identity[k] for k in ("channels", "cells", "input_shape")},
        "dataset": identity["dataset"],
        "provenance": {"gtn_run": identity["gtn_run"], "gtn_step": identity["gtn_step"],
                       "seed": identity["seed"], "index": r["idx"],
                       "key": f"fold_in(PRNGKey({identity['seed']}), {r['idx']})",
                       "steps": identity["steps"], "real_steps": identity["real_steps"],
                       "eval_subset": identity["eval_subset"], "program": identity["program"]},
    }


def _mean(rows: list[Row], col: str) -> float | None:
    vals = [r[col] for r in rows if r.get(col) is not None]
    return float(np.mean(vals)) if vals else None


def summary(cfg, run_dir, rows, new_rows, board, identity, wall) -> dict[str, Any]:
    best = board[0] if board else None
    out = {
        "search_dir": str(run_dir), "space": identity["space"], "dataset": identity["dataset"],
        "gtn_run": identity["gtn_run"], "gtn_step": identity["gtn_step"],
        "channels": identity["channels"], "cells": identity["cells"],
        "program": identity["program"], "proxies": list(cfg.proxies), "ranked_by": cfg.proxies[0],
        "architectures": len(rows), "scored_now": len(new_rows),
        "strategy": "random",
        "best": None if best is None else {
            "genotype": best["genotype"], "index": best["idx"], "stage": cfg.proxies[0],
            "scores": {p: best[score_column(p)] for p in PROXIES
                       if best.get(score_column(p)) is not None}},
        "best_arch": best["genotype"] if best else None,
        "best_score": best[score_column(cfg.proxies[0])] if best else None,
        "best_index": best["idx"] if best else None,
        "wall_seconds": round(wall, 1),
        "archs_per_minute": round(60 * len(new_rows) / wall, 2) if new_rows and wall > 0 else None,
    }
    if VOTE in cfg.proxies:
        out["vote"] = list(cfg.vote)
    for p in proxy_columns(rows):
        if p == VOTE:
            continue
        out[f"{p}_train_s_mean"] = _mean(rows, f"{p}_train_s")
        out[f"{p}_compile_s_mean"] = _mean(rows, f"{p}_compile_s")
    out["leaderboard"] = str(run_dir / "leaderboard.csv")
    return out


__all__ = ["export", "leaderboard", "proxy_columns", "summary", "top_record", "voted",
           "write_board"]
