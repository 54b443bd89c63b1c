"""`gtn-nas rank`: how well each proxy of a search orders architectures by a ground truth.

For every proxy with scores, over the n architectures that also have a truth value:

- Spearman's ρ and Kendall's τ (τ-b: ties, e.g. equal parameter counts, are allowed);
- the same two over the top ``top_fraction`` of architectures by the proxy's own estimate (the
  paper's 0.5582 is over the top 50%, gtn-spec 3.3);
- top-10% overlap: |top-k by proxy ∩ top-k by truth| / k with k = ⌈n/10⌉ (ties broken by index);
- the truth value of the architecture the proxy ranks first, next to the best truth of all n;
- best-of-N: a random search of N architectures scored by the proxy keeps its top one; the truth
  of that pick, mean and std over ``BEST_OF_RESAMPLES`` random N-subsets of the n (fixed seed),
  for N = 10 and 100 (where n allows), beside the same for an oracle (the subset's best truth);
- a 95 % bootstrap interval of ρ (``BOOTSTRAP_RESAMPLES`` resamples of the n architectures, fixed
  seed): at the 50-200 architectures a CPU affords, ρ's sampling error is ~0.1, as large as most
  gaps between proxies, and a table without it invites reading noise as a ranking of proxies.
  ``bootstrap_spearman`` draws the same resamples for every proxy, so that two proxies compare
  paired (how often one beats the other).

Truth: ``nb201`` reads NAS-Bench-201's table (``<data_dir>/nb201/nb201_cifar_accuracy.csv``,
keyed by the benchmark's architecture string), ``DIR:proxy`` another search's scores (e.g. a
long real-data run), matched by genotype string (duplicates averaged).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from gtn_nas.config import VOTE, RankConfig
from gtn_nas.errors import ConfigError, DataError
from gtn_nas.io.runs import check_writable, save_result
from gtn_nas.search.store import DEGENERATE, PROXIES, Store, score_column
from gtn_nas.search.vote import with_vote
from gtn_nas.io.ui import Reporter

NB201_FILE = Path("nb201") / "nb201_cifar_accuracy.csv"
BEST_OF = (10, 100)
BEST_OF_RESAMPLES = 1000
BOOTSTRAP_RESAMPLES = 2000
NB201_COLUMNS = {"cifar10": "CIFAR10TestAccuracy200Epochs",
                 "cifar100": "CIFAR100TestAccuracy200Epochs",
                 "imagenet16": "ImageNetTestAccuracy200Epochs"}


def _open_store(folder: str | Path) -> Store:
    path = Path(folder) / "results.sqlite"
    if not path.is_file():
        raise ConfigError(f"{folder} is not a search directory (no results.sqlite); pass the "
                          "--out directory of `gtn-nas search`")
    return Store(path, readonly=True)


NB201_CELLS = 15_625  # 5 ops on 6 edges: the table has one row per cell


def nb201_truth(data_dir: str | Path | None, column: str = "cifar10") -> dict[str, float]:
    """Genotype string -> the benchmark's final test accuracy (percent), from a table that holds
    every one of the 15,625 cells once, each accuracy a number in [0, 100]: a cut or edited
    table would otherwise rank a subset, or another benchmark, without a word."""
    from gtn_nas.io.data import default_data_dir

    path = Path(data_dir).expanduser() if data_dir else default_data_dir()
    path = path / NB201_FILE
    if not path.is_file():
        raise DataError(f"NAS-Bench-201 ground truth not found at {path}; pass --data-dir with "
                        f"{NB201_FILE} (columns ArchitectureString, {NB201_COLUMNS[column]})")
    want = NB201_COLUMNS[column]
    truth: dict[str, float] = {}
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "ArchitectureString" not in reader.fieldnames \
                    or want not in reader.fieldnames:
                raise DataError(f"{path} lacks the ArchitectureString or {want} column")
            for line, row in enumerate(reader, start=2):
                arch, cell = row["ArchitectureString"], row[want]
                try:
                    value = float(cell)
                except (TypeError, ValueError):
                    value = math.nan
                if not 0 <= value <= 100:
                    raise DataError(f"{path} line {line}: {want} is {cell!r:.40}, not an accuracy "
                                    "in [0, 100]; the table is damaged")
                if arch in truth:
                    raise DataError(f"{path} line {line}: {arch!r:.80} appears twice; the table "
                                    "is damaged")
                truth[arch] = value
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path} is not a readable CSV table ({e})") from None
    if len(truth) != NB201_CELLS:
        raise DataError(f"{path} holds {len(truth):,} cells, not NAS-Bench-201's {NB201_CELLS:,}; "
                        "the table is cut short or damaged")
    return truth


def search_truth(folder: str, proxy: str) -> dict[str, float]:
    """Genotype string -> another search's ``proxy`` score (averaged over repeated genotypes)."""
    store = _open_store(folder)
    try:
        rows = store.rows()
    finally:
        store.close()
    col = score_column(proxy)
    by_arch: dict[str, list[float]] = {}
    for r in rows:
        if r.get(col) is not None:
            by_arch.setdefault(r["genotype"], []).append(float(r[col]))
    if not by_arch:
        raise ConfigError(f"{folder} has no {proxy} scores to use as the truth")
    return {g: float(np.mean(v)) for g, v in by_arch.items()}


def _corr(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None]:
    from scipy import stats

    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return None, None  # undefined for fewer than 2 points or a constant
    rho = stats.spearmanr(x, y).statistic
    tau = stats.kendalltau(x, y).statistic
    return float(rho), float(tau)


def _top(order_by: np.ndarray, idx: np.ndarray, k: int) -> set[int]:
    """The k entries with the highest ``order_by`` (ties: lower index first)."""
    order = np.lexsort((idx, -order_by))
    return set(idx[order[:k]].tolist())


def best_of(proxy: np.ndarray, truth: np.ndarray, n_pick: int, resamples: int = BEST_OF_RESAMPLES,
            seed: int = 0) -> dict[str, float] | None:
    """Truth of the proxy's pick among ``n_pick`` random architectures (mean, std over
    ``resamples`` subsets; ties: the earlier), and the subset's best truth; None if n < n_pick."""
    n = len(proxy)
    if n < n_pick:
        return None
    rng = np.random.default_rng(seed)
    picked, oracle = np.empty(resamples), np.empty(resamples)
    for r in range(resamples):
        sub = np.sort(rng.choice(n, n_pick, replace=False))
        picked[r] = truth[sub[np.argmax(proxy[sub])]]
        oracle[r] = truth[sub].max()
    return {"mean": float(picked.mean()), "std": float(picked.std()),
            "oracle_mean": float(oracle.mean()), "oracle_std": float(oracle.std())}


def bootstrap_spearman(scores: np.ndarray, truth: np.ndarray,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> np.ndarray:
    """[P, R] Spearman ρ of each row of ``scores`` ([P, n] or [n]) against ``truth`` ([n]) over R
    resamples (with replacement) of the n architectures, the same resamples for every row; NaN
    where a resample makes either side constant. Ties share their mean rank, as in scipy."""
    from scipy.stats import rankdata

    scores = np.atleast_2d(np.asarray(scores, np.float64))
    truth = np.asarray(truth, np.float64)
    idx = np.random.default_rng(seed).integers(0, len(truth), (resamples, len(truth)))

    def centred_ranks(a: np.ndarray) -> np.ndarray:
        r = rankdata(a, axis=-1)
        return r - r.mean(axis=-1, keepdims=True)

    t = centred_ranks(truth[idx])  # [R, n]
    s = centred_ranks(scores[:, idx])  # [P, R, n]
    den = np.sqrt((s * s).sum(-1) * (t * t).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (s * t).sum(-1) / den, np.nan)


def spearman_interval(proxy: np.ndarray, truth: np.ndarray, level: float = 0.95
                      ) -> list[float] | None:
    """The percentile bootstrap interval of ρ (None for fewer than 3 architectures)."""
    if len(proxy) < 3:
        return None
    rho = bootstrap_spearman(proxy, truth)[0]
    rho = rho[np.isfinite(rho)]
    if len(rho) < 0.5 * BOOTSTRAP_RESAMPLES:  # (nearly) constant scores: no interval
        return None
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(rho, tail)), float(np.percentile(rho, 100 - tail))]


def rank_metrics(proxy: np.ndarray, truth: np.ndarray, index: np.ndarray | None = None,
                 top_fraction: float = 0.5) -> dict[str, Any]:
    """The metrics of the module docstring for paired arrays ``proxy`` and ``truth`` ([n])."""
    proxy, truth = np.asarray(proxy, np.float64), np.asarray(truth, np.float64)
    n = len(proxy)
    index = np.arange(n) if index is None else np.asarray(index)
    out: dict[str, Any] = {"n": n}
    out["spearman"], out["kendall"] = _corr(proxy, truth)
    out["spearman_ci95"] = None if out["spearman"] is None else spearman_interval(proxy, truth)
    m = max(2, math.ceil(top_fraction * n)) if n else 0
    sel = np.lexsort((index, -proxy))[:m]
    out["top_fraction"] = top_fraction
    out["top_n"] = len(sel)
    out["spearman_top"], out["kendall_top"] = _corr(proxy[sel], truth[sel])
    k = max(1, math.ceil(0.1 * n)) if n else 0
    out["top10_k"] = k
    out["top10_overlap"] = (len(_top(proxy, index, k) & _top(truth, index, k)) / k) if k else None
    if n:
        first = np.lexsort((index, -proxy))[0]
        out["picked_index"] = int(index[first])
        out["picked_truth"] = float(truth[first])
        out["best_truth"] = float(truth.max())
        out["picked_truth_rank"] = int(np.sum(truth > truth[first])) + 1  # 1 = the best
    order = np.argsort(index, kind="stable")  # subsets drawn over the index order
    for n_pick in BEST_OF:
        out[f"best_of_{n_pick}"] = best_of(proxy[order], truth[order], n_pick)
    return out


def rank(cfg: RankConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Runs `gtn-nas rank`; returns the summary also saved as ``rank.json``."""
    from gtn_nas.io import plots

    rep = reporter or Reporter(quiet=True)
    out_path = check_writable(Path(cfg.out) if cfg.out else Path(cfg.search) / "rank.json",
                              is_file=True)
    plot_dir = check_writable(Path(cfg.plots) if cfg.plots else Path(cfg.search) / "plots")
    store = _open_store(cfg.search)
    try:
        rows = store.rows()
        dataset = store.get_meta("id.dataset")
        vote = store.get_meta(VOTE)
    finally:
        store.close()
    if not rows:
        raise ConfigError(f"{cfg.search} has no results yet; run `gtn-nas search` first")
    if vote:  # as the search's leaderboard counts it, over all its rows
        rows = with_vote(rows, vote)
    if cfg.truth == "nb201":
        spaces = {r["space"] for r in rows}
        if spaces != {"nb201"}:
            raise ConfigError(f"--truth nb201 ranks NB201 searches; {cfg.search} searched "
                              f"{', '.join(sorted(spaces))}")
        if dataset is not None and dataset != "cifar10":
            raise ConfigError(
                f"--truth nb201 is NAS-Bench-201's table of networks trained on CIFAR-10/100 and "
                f"ImageNet16-120; {cfg.search} scored architectures on {dataset}; rank it "
                "against a longer real-data search instead (--truth DIR:real)")
        truth = nb201_truth(cfg.data_dir, cfg.truth_column)
        label = f"NB201 {cfg.truth_column} test accuracy"
    else:
        folder, _, proxy = cfg.truth.rpartition(":")
        truth = search_truth(folder, proxy)
        label = f"{proxy} score of {folder}"
    without = sorted({r["genotype"] for r in rows} - truth.keys())
    if without:
        rep.warn(f"{len(without)} of {len({r['genotype'] for r in rows})} architectures of "
                 f"{cfg.search} have no truth value in {cfg.truth}; they are left out")

    results: dict[str, Any] = {}
    table = []
    scatters = []
    for proxy in PROXIES:
        col = score_column(proxy)
        paired = [(r[col], truth[r["genotype"]], r["idx"]) for r in rows
                  if r.get(col) is not None and r["genotype"] in truth]
        if not paired:
            continue
        p, t, i = (np.array(v) for v in zip(*paired))
        m = rank_metrics(p, t, i, cfg.top_fraction)
        png = plot_dir / f"rank_{proxy}.png"
        rho = "n/a" if m["spearman"] is None else f"{m['spearman']:.3f}"
        tau = "n/a" if m["kendall"] is None else f"{m['kendall']:.3f}"
        shown = p > DEGENERATE  # undefined zero-cost scores rank last but are not drawn
        scatters.append(dict(x=p[shown], y=t[shown], path=png, xlabel=f"{proxy} proxy",
                             ylabel=label,
                             title=f"{proxy}: Spearman {rho}, Kendall {tau}, n={m['n']}"))
        m["plot"] = str(png)
        results[proxy] = m
        table.append({"proxy": proxy, "n": m["n"],
                      "spearman (95% CI)": _fmt(m["spearman"]) + format_interval(m["spearman_ci95"]),
                      "kendall": _fmt(m["kendall"]),
                      f"spearman top {cfg.top_fraction:.0%}": _fmt(m["spearman_top"]),
                      f"kendall top {cfg.top_fraction:.0%}": _fmt(m["kendall_top"]),
                      "top-10% overlap": _fmt(m["top10_overlap"]),
                      "truth of pick": _fmt(m.get("picked_truth")),
                      "best truth": _fmt(m.get("best_truth")),
                      **{f"best of {k}": _fmt_best(m[f"best_of_{k}"]) for k in BEST_OF}})
    if not results:
        raise ConfigError(f"no architecture of {cfg.search} has a truth value in {cfg.truth}")
    summary = {"search": str(cfg.search), "truth": cfg.truth, "truth_label": label,
               "architectures": len(rows), "without_truth": len(without), "proxies": results}
    save_result(out_path, summary)  # first: the figures outlive a failure to draw them
    for scatter in scatters:
        plots.scatter(**scatter)
    rep.table(f"rank correlation against {label}", table)
    rep.info(f"saved {out_path} and {plot_dir}/rank_*.png")
    return summary


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def format_interval(ci: list[float] | None) -> str:
    """" (lo to hi)" after a rho, or nothing where there is no interval (rank and proxy tables)."""
    return "" if ci is None else f" ({ci[0]:.2f} to {ci[1]:.2f})"


def _fmt_best(b: dict[str, float] | None) -> str:
    return "n/a" if b is None else f"{b['mean']:.4g} ± {b['std']:.2g}"


__all__ = ["best_of", "bootstrap_spearman", "format_interval", "nb201_truth", "rank", "rank_metrics",
           "search_truth", "spearman_interval"]
