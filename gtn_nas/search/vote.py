"""``vote``: one ranking from several proxies of a search, as AZ-NAS aggregates its scores.

Over the m architectures that hold a score for every part, each part ranks them (1 = lowest
score, m = highest; ties share their mean rank) and the vote is Σ_parts log(rank / m): at most 0
(first by every part), and an architecture last by one part pays log(1/m) for it, so a vote rewards
being good by all parts over being best by one (the log-rank aggregation of Lee & Ham, AZ-NAS, CVPR 2024).

A vote is relative to the architectures it ranks: it is recomputed from the stored parts whenever
the leaderboard is written, never stored, so a resumed or grown search votes over all its rows.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import rankdata

from gtn_nas.config import VOTE

Row = dict


def log_rank_vote(scores: np.ndarray) -> np.ndarray:
    """The vote of ``scores`` [m, parts] (higher is better in every column): [m]."""
    scores = np.asarray(scores, np.float64)
    m = scores.shape[0]
    if m == 0:
        return np.zeros((0,))
    ranks = rankdata(scores, axis=0)  # 1 = lowest, ties averaged
    return np.sum(np.log(ranks / m), axis=1)


def with_vote(rows: Sequence[Row], parts: Sequence[str]) -> list[Row]:
    """``rows`` with ``vote_score`` set on those that hold every part's score (others None)."""
    from gtn_nas.search.store import score_column

    cols = [score_column(p) for p in parts]
    full = [i for i, r in enumerate(rows) if all(r.get(c) is not None for c in cols)]
    votes = log_rank_vote(np.array([[rows[i][c] for c in cols] for i in full]).reshape(
        len(full), len(cols)))
    out = [{**r, f"{VOTE}_score": None} for r in rows]
    for i, v in zip(full, votes):
        out[i][f"{VOTE}_score"] = float(v)
    return out


__all__ = ["log_rank_vote", "with_vote"]
