"""`gtn-nas search`: architecture search scored by a GTN (and baselines). ``--strategy random``
(the default) runs here; evolution, local search and the cascade propose from scores, in
``search.driver`` (after the same preparation: run directory, lock, GTN, data, store identity).

The driver: the run directory and its lock, the GTN the search scores with (kept across
resumes), the data, the loop over this shard's indices (``search.indices``), each row committed
to ``results.sqlite`` (``search.store``) as its architecture finishes, and the exports
(``search.export``). Proxies and programs are ``search.scorer``'s; ``--workers`` fans the
indices out over local processes (``search.fanout``). Rerunning the same command skips finished
indices, so a killed search resumes without a lost or duplicated row; at the end (Ctrl-C
included) ``leaderboard.csv``, ``top/NN.json`` (what ``gtn-nas retrain --arch`` reads) and
``summary.json`` are rewritten from the database.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax

from gtn_nas.config import VOTE, SearchConfig, resumable_keys
from gtn_nas.core import distributed as dist
from gtn_nas.errors import CheckpointError, ConfigError
from gtn_nas.io import signals
from gtn_nas.io.data import load_dataset
from gtn_nas.io.runs import check_writable, hold_lock, open_run_dir, write_json
from gtn_nas.io.ui import Reporter
from gtn_nas.meta.gtn import load_gtn, restore_meta_params
import gtn_nas.search.export as exports
from gtn_nas.search.indices import architecture_keys, genotype_at, index_stop, indices
from gtn_nas.search.driver import record_evaluations
from gtn_nas.search.scorer import Scorer
from gtn_nas.search.store import Row, Store, score_column
from gtn_nas.search.vote import with_vote

WORKER_MODULE = "gtn_nas.commands.search"  # `python -m` entry of a fan-out worker


WORKER_LOCK_WAIT = 60.0  # seconds
DEFAULT_REAL_BATCH = 128  # the real proxy's batch in a search without a GTN to take it from
_UNCHECKED = object()  # _search's GTN argument when the caller has not loaded it


def _check_gtn(cfg: SearchConfig):
    """The search's GTN, loaded (finite) and matching ``--dataset``: before anything is written.
    Returns load_gtn's (config, teacher, meta-parameters, step), or None when no proxy needs a
    GTN (then ``--dataset`` names the data)."""
    if not cfg.needs_gtn:
        if cfg.dataset is None:
            raise ConfigError(f"give --dataset: the proxies {','.join(cfg.proxies)} read no GTN "
                              "to take it from")
        if "real" in cfg.proxies and not (cfg.real_steps or cfg.steps) \
                and cfg.strategy != "cascade":  # a cascade's stages give their steps
            raise ConfigError("give --real-steps for the real proxy: without a GTN there is no "
                              "curriculum length to default to")
        return None
    gtn = load_gtn(cfg.gtn, cfg.checkpoint)
    mcfg = gtn[0]
    if cfg.dataset is not None and cfg.dataset != mcfg.dataset:
        raise ConfigError(f"the GTN in {cfg.gtn} was meta-trained on {mcfg.dataset}, not "
                          f"{cfg.dataset}; search with a GTN of {cfg.dataset} or drop --dataset")
    return gtn


def _load_gtn(gtn_dir: str, step: int | None, loaded):
    """The GTN ``loaded`` by ``_check_gtn``, or its checkpoint at ``step`` (a resumed search
    keeps the GTN it began with)."""
    if loaded is None:
        return None, None, None, None
    mcfg, teacher, meta, latest = loaded
    if step is None or step == latest:
        return mcfg, teacher, meta, latest
    where = Path(gtn_dir) / "checkpoints"
    if (Path(gtn_dir) / "best" / str(step)).exists():
        where = Path(gtn_dir) / "best"
    if not (where / str(step)).exists():
        raise CheckpointError(
            f"this search scored with the GTN of {gtn_dir} at outer step {step}, which is no "
            f"longer in {where} (now at step {latest}); use a new --out directory")
    meta, _ = restore_meta_params(mcfg, teacher, where, step)
    return mcfg, teacher, meta, step


def _resolve_sizes(cfg: SearchConfig, mcfg, space, image_shape) -> dict[str, Any]:
    same = mcfg is not None and mcfg.learner == space.name  # the GTN's learners are this space's
    channels = cfg.channels or (mcfg.learner_width if same and mcfg.learner_width else
                                space.defaults.channels)
    cells = cfg.cells or (mcfg.learner_cells if same else space.defaults.cells)
    return {"channels": int(channels), "cells": int(cells), "input_shape": list(image_shape)}


def _resolve_program(cfg: SearchConfig, stored: str | None = None) -> str:
    """``--program``; ``auto``: what a resumed search ran (``stored``: the programs' float
    rounding differs, so the rows of one search come from one), else per space and backend."""
    if cfg.program != "auto":
        return cfg.program
    if stored is not None:
        return stored
    if cfg.space != "nb201":
        return "exact"
    return "shared" if jax.default_backend() != "cpu" else "composed"


def shard_of(cfg: SearchConfig) -> tuple[int, int]:
    """(shard, num_shards) of this process: the options, else JAX's launch variables."""
    if cfg.shard is not None or cfg.num_shards > 1:
        return cfg.shard or 0, cfg.num_shards
    n, i = dist.env_int(dist.ENV_NUM_PROCESSES), dist.env_int(dist.ENV_PROCESS_ID)
    if n is None or n <= 1:
        return 0, 1
    if i is None or not 0 <= i < n:
        raise ConfigError(f"${dist.ENV_NUM_PROCESSES}={n} needs ${dist.ENV_PROCESS_ID} in "
                          f"[0, {n}), got {i}")
    return i, n


def claim_shard(run_dir: Path, shard: int, num_shards: int, wait: float = 0.0):
    """Holds the lock of the search's shard for this process's lifetime, so a second `gtn-nas
    search` on the same --out and shard (or a rerun beside a fan-out worker that outlived its
    parent) is refused instead of scoring the same indices again. Returns the open lock file
    (closing it releases the lock). ``wait``: how long to wait for a holder that is stopping."""
    return hold_lock(run_dir / f".shard-{shard}-of-{num_shards}.lock",
                     f"the search of shard {shard} of {num_shards} in {run_dir} (split the work "
                     "with --num-shards N --shard I)", wait=wait)


def search(cfg: SearchConfig, reporter: Reporter | None = None,
           on_row: Callable[[Row], None] | None = None, worker: bool = False) -> dict[str, Any]:
    """Runs (or resumes) a search; returns the summary also saved as ``summary.json``.

    ``on_row`` is called after each committed row (tests use it to interrupt a search).
    ``worker``: a fan-out child (``search.fanout``) that only adds rows to an existing search
    directory; its parent writes the config, leaderboard and summary.
    """
    from search_spaces import get_space

    started = time.time()  # --time-budget bounds the whole invocation, worker processes included
    rep = reporter or Reporter(quiet=True)
    space = get_space(cfg.space)
    if not worker:
        check_writable(cfg.out)
    gtn = _check_gtn(cfg)  # refused: nothing is written that would block the corrected command
    # The shard's lock first, then the config: a second search refused by the lock leaves the
    # running one's config.json as it was. A worker holds its own shard of the fan-out, waiting a
    # little for an orphan of a killed parent that is still finishing its architecture.
    claim = claim_shard(Path(cfg.out), *shard_of(cfg), wait=WORKER_LOCK_WAIT if worker else 0.0)
    try:
        if worker:
            run_dir, resumed = Path(cfg.out), True
        else:
            run_dir, resumed = open_run_dir(cfg, cfg.out, ignore=resumable_keys(SearchConfig))
        if cfg.workers > 1:
            from gtn_nas.search.fanout import run_workers

            run_workers(cfg, rep, run_dir, *shard_of(cfg), entry=[sys.executable, "-m", WORKER_MODULE])
        store = Store(run_dir / "results.sqlite")
        try:
            return _search(cfg, rep, space, run_dir, resumed, store, on_row, worker,
                           started, gtn)
        finally:
            store.close()
    finally:
        claim.close()  # closing the file releases the lock


def _search(cfg, rep, space, run_dir: Path, resumed: bool, store: Store, on_row,
            worker: bool = False, started: float | None = None, gtn=_UNCHECKED):
    if gtn is _UNCHECKED:
        gtn = _check_gtn(cfg)
    mcfg, teacher, meta, gtn_step = _load_gtn(cfg.gtn, store.get_meta("id.gtn_step"), gtn)
    if mcfg is None:  # no proxy needs a GTN
        dataset, split_seed = cfg.dataset, 0
        data = load_dataset(dataset, cfg.data_dir, split_seed)
        steps = None
        real_steps = cfg.real_steps or cfg.steps
        real_batch = cfg.real_batch_size or DEFAULT_REAL_BATCH
    else:
        dataset, split_seed = mcfg.dataset, mcfg.split_seed
        data = load_dataset(dataset, cfg.data_dir or mcfg.data_dir, split_seed)
        gen_shape = tuple(teacher.generator.image_shape)
        if tuple(data.image_shape) != gen_shape:
            raise ConfigError(f"the GTN in {cfg.gtn} generates {'x'.join(map(str, gen_shape))} "
                              f"images but the {dataset} data from {data.source} is "
                              f"{'x'.join(map(str, data.image_shape))}")
        steps = cfg.steps or mcfg.inner_steps
        if steps > mcfg.inner_steps:
            raise ConfigError(f"--steps {steps} exceeds the GTN's curriculum length "
                              f"{mcfg.inner_steps}")
        real_steps = cfg.real_steps or steps
        real_batch = cfg.real_batch_size or mcfg.batch_size
    sizes = _resolve_sizes(cfg, mcfg, space, data.image_shape)
    program = _resolve_program(cfg, store.get_meta("id.program"))
    identity = {
        "space": space.name, "seed": cfg.seed, "archs": list(cfg.archs),
        "gtn_run": str(Path(cfg.gtn).resolve()) if mcfg is not None else None,
        "gtn_step": gtn_step, "dataset": dataset,
        "split_seed": split_seed, **sizes, "steps": steps, "real_steps": real_steps,
        "real_batch_size": real_batch, "real_lr": cfg.real_lr,
        "real_momentum": cfg.real_momentum, "real_schedule": cfg.real_schedule,
        "gtn_bn": cfg.gtn_bn if mcfg is not None else None,
        "eval_subset": cfg.eval_subset, "program": program, "zc_batch_size": cfg.zc_batch_size,
    }
    if cfg.strategy != "random":  # the proposals, hence every architecture's index and key
        identity.update(strategy=cfg.strategy, stages=list(cfg.stages), eta=cfg.eta,
                        population=cfg.population, tournament=cfg.tournament,
                        explore_share=cfg.explore_share)
    store.bind(identity)
    if not worker:  # what `rank` and `show` recount the vote from
        store.set_meta(VOTE, list(cfg.vote) if VOTE in cfg.proxies else None)
    scorer = Scorer(cfg, space, teacher, meta, data, sizes, steps, real_steps, real_batch, program)
    if cfg.strategy != "random":
        return _strategy_search(cfg, rep, space, run_dir, resumed, store, identity, scorer,
                                (teacher, meta, data, sizes, steps, real_steps, real_batch,
                                 program), mcfg, started)
    primary = cfg.proxies[0]
    done = store.done(cfg.scored_proxies)
    existing = {r["idx"]: r for r in store.rows()}
    shard, num_shards = shard_of(cfg)
    stop = index_stop(cfg)
    total = len(range(shard, stop, num_shards)) if stop else None
    completed = len([i for i in done if (stop is None or i < stop) and i % num_shards == shard])
    worker_id = f"{socket.gethostname()}:{os.getpid()}/{shard}of{num_shards}"
    if resumed and completed:
        rep.info(f"resuming {run_dir}: {completed} architectures already scored")
    trained = (f", gtn {steps} steps, program {program}, GTN step {gtn_step}"
               if mcfg is not None else f", {dataset}, no GTN")
    rep.info(f"search: {space.name} C={sizes['channels']} N={sizes['cells']}, proxies "
             f"{','.join(cfg.proxies)}{trained}")

    best, _ = _leader(existing, cfg)
    twins: dict[str, Row] = {}  # the first complete row of each genotype
    for r in sorted(existing.values(), key=lambda r: r["idx"]):
        if all(r.get(score_column(p)) is not None for p in cfg.scored_proxies):
            twins.setdefault(r["genotype"], r)
    new_rows: list[Row] = []
    t_start = time.time()
    started = t_start if started is None else started
    interrupted = False
    try:
        with rep.progress("search", total=total, completed=completed) as bar:
            mark = signals.received()
            for i in indices(cfg, shard, num_shards):
                signals.raise_if_received_since(mark)  # one that a gc callback swallowed
                if cfg.time_budget is not None and time.time() - started >= cfg.time_budget:
                    break
                if i in done:
                    continue
                genotype = genotype_at(space, cfg, i)
                old = existing.get(i)
                if old is not None and old["genotype"] != genotype.to_str():
                    raise CheckpointError(f"row {i} of {store.path} holds {old['genotype']}, not "
                                          f"{genotype.to_str()}; the database does not belong to "
                                          "this search")
                missing = [p for p in cfg.scored_proxies
                           if old is None or old.get(score_column(p)) is None]
                twin = twins.get(genotype.to_str()) if old is None else None
                if twin is not None:  # drawn before: scored once, its scores copied
                    row = {k: twin[k] for k in ("genotype", "space", "params", "flops")}
                    row.update({score_column(p): twin[score_column(p)] for p in missing},
                               idx=i, seconds=0.0)
                else:
                    row = scorer.score(i, genotype, missing, architecture_keys(cfg.seed, i)[1])
                    record_evaluations(store, row, missing, identity)
                row["worker"] = worker_id
                store.put(row)
                new_rows.append(row)
                full = {**(old or {}), **{k: v for k, v in row.items() if v is not None}}
                existing[i] = full
                if all(full.get(score_column(p)) is not None for p in cfg.scored_proxies):
                    twins.setdefault(full["genotype"], full)
                if primary == VOTE:  # a vote ranks the whole search: recount it
                    best, full = _leader(existing, cfg, i)
                elif best is None or full[score_column(primary)] > best[score_column(primary)]:
                    best = full
                elapsed = time.time() - t_start
                rate = 60.0 * len(new_rows) / max(elapsed, 1e-9)
                bar.update(1, rate=f"{rate:.1f} arch/min",
                           best=best[score_column(primary)], last=full[score_column(primary)])
                if on_row is not None:
                    on_row(row)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        rows = store.rows()
        board = [] if worker else exports.export(run_dir, rows, cfg, identity)
    if interrupted:
        rep.info(f"interrupted after {len(new_rows)} new architectures; run the same command "
                 "again to resume")
        raise KeyboardInterrupt
    wall = time.time() - t_start
    summary = exports.summary(cfg, run_dir, rows, new_rows, board, identity, wall)
    if worker:
        return summary
    if num_shards > 1:
        summary.update(shard=shard, num_shards=num_shards)
    write_json(run_dir / "summary.json", summary)
    _report(rep, cfg, board, summary)
    return summary


def _strategy_search(cfg, rep, space, run_dir: Path, resumed: bool, store: Store, identity,
                     scorer: Scorer, parts, mcfg, started: float | None):
    """``--strategy evolution | local | cascade``: the strategy in this process, each evaluation
    committed to the store as it finishes (``search.driver``)."""
    from gtn_nas.search import driver

    teacher, meta, data, sizes, steps, real_steps, real_batch, program = parts
    started = time.time() if started is None else started
    stages = driver.stages_of(cfg, sizes, steps, cfg.real_steps,
                              mcfg.inner_steps if mcfg is not None else None)
    if any(s.objective.proxy == "gtn" for s in stages) and teacher is None:
        raise ConfigError("a gtn stage needs a GTN: pass --gtn DIR")
    scorers = {(sizes["channels"], sizes["cells"]): scorer}

    def scorer_for(channels: int, cells: int) -> Scorer:
        if (channels, cells) not in scorers:
            scorers[(channels, cells)] = Scorer(
                cfg, space, teacher, meta, data, {**sizes, "channels": channels, "cells": cells},
                steps, real_steps, real_batch, program)
        return scorers[(channels, cells)]

    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    extra = cfg.scored_proxies if cfg.strategy != "cascade" else ()
    evaluations = driver.Evaluations(store, scorer_for, cfg.seed, identity, worker_id, extra)
    if resumed and evaluations.cache:
        rep.info(f"resuming {run_dir}: {len(evaluations.index)} architectures already scored")
    rep.info(f"search: {space.name}, {cfg.strategy} over "
             f"{' > '.join(s.label for s in stages)}"
             + (f", eta {cfg.eta:g}" if len(stages) > 1 else "")
             + (f", GTN step {identity['gtn_step']}" if mcfg is not None else ", no GTN"))
    result, interrupted = driver.run(cfg, rep, run_dir, store, stages, evaluations, space,
                                     started)
    if interrupted or result is None:
        exports.export(run_dir, store.rows(), cfg, identity)  # the first stage's, so far
        rep.info(f"interrupted after {evaluations.scored_now} new evaluations; run the same "
                 "command again to resume")
        raise KeyboardInterrupt
    summary, board = driver.export(run_dir, cfg, result, evaluations, identity,
                                   time.time() - started)
    table = [{"rank": i + 1, "stage": r["stage"], **{k: round(v, 4) for k, v in
                                                      r["stage_scores"].items()},
              "arch": r["genotype"]} for i, r in enumerate(board[:cfg.top_k])]
    rep.table(f"leaderboard ({cfg.strategy}, top {len(table)} of {len(board)})", table)
    shown = {k: v for k, v in summary.items() if v is not None and k != "per_stage"}
    shown["best"] = f"{summary['best']['genotype']} (chosen by {summary['best']['stage']})" \
        if summary["best"] else None
    rep.summary("search summary", shown)
    return summary


def _leader(rows: dict[int, Row], cfg: SearchConfig, i: int | None = None):
    """(the row with the best score by the search's first proxy, row ``i``), a vote counted
    over every row."""
    col = score_column(cfg.proxies[0])
    pool = list(rows.values())
    if cfg.proxies[0] == VOTE:
        pool = with_vote(pool, cfg.vote)
    best = max((r for r in pool if r.get(col) is not None), key=lambda r: r[col], default=None)
    return best, next((r for r in pool if r["idx"] == i), None)


def _report(rep: Reporter, cfg: SearchConfig, board: list[Row], summary: dict) -> None:
    proxies = exports.proxy_columns(board)
    table = []
    for rank, r in enumerate(board[:cfg.top_k], start=1):
        entry: dict[str, Any] = {"rank": rank, "index": r["idx"], "params": r["params"]}
        entry.update({p: r[f"{p}_score"] for p in proxies})
        entry["arch"] = r["genotype"]
        table.append(entry)
    rep.table(f"leaderboard (by {cfg.proxies[0]}, top {min(cfg.top_k, len(board))} of "
              f"{len(board)})", table)
    rep.summary("search summary", {k: v for k, v in summary.items()
                                   if v is not None and k != "best"})


def worker_main(argv: list[str]) -> int:
    """Entry of one fan-out worker process: ``python -m gtn_nas.commands.search CONFIG_JSON``."""
    from gtn_nas.config import load_config
    from gtn_nas.errors import GtnError
    from gtn_nas.io.signals import ENV_PARENT, die_with_parent, stop_on_signals

    stop_on_signals()  # a parent that stops its workers, or dies (die_with_parent), sends it
    try:
        parent = os.environ.get(ENV_PARENT)
        die_with_parent(int(parent) if parent and parent.isdigit() else None)
        if len(argv) != 1:
            raise ConfigError(f"usage: python -m {WORKER_MODULE} WORKER_CONFIG.json")
        search(load_config(SearchConfig, Path(argv[0])), worker=True)
    except GtnError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


__all__ = ["claim_shard", "search", "shard_of", "worker_main"]


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
