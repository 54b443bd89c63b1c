"""`gtn-nas search`: random architecture search scored by a GTN (and baselines).

Architecture i of a search is one record, always: with
``k_arch, k_train = split(fold_in(PRNGKey(seed), i))`` its genotype is ``space.sample(k_arch)``
(or the i-th of ``--arch`` strings), and every proxy trains a fresh learner of *that* genotype
from the initial weights of ``k_train`` (the official code paired one architecture's genotype with
another's score, gtn-spec 3.2). Proxies:

- ``gtn``: ``steps`` inner steps (default the GTN's T) on the GTN's curriculum with its learned
  lr/momentum schedule, then accuracy on a fixed validation subset (``eval_subset`` images);
- ``real``: ``real_steps`` SGD steps (default the same number) on real training batches with a
  fixed lr/momentum, the same inner loop and the same validation subset (the paper's baseline);
- ``params``: the parameter count (the trivial baseline every proxy should beat).

Programs: ``exact`` compiles each genotype's own network and steps its inner loop from Python
(``training.SteppedLearner``: XLA's CPU backend runs convolutions ~10x slower inside ``lax.scan``),
with the learner's init run eagerly so its small ops compile once per search, not per genotype;
``shared`` runs every NB201 genotype through the weight-sharing supernet with the op indices as an
array argument: one compilation for the whole search, stepped from Python the same way on CPU,
one program per proxy (the whole inner loop) on accelerators. Each row records the compile and
train seconds of each proxy.

Rows go to ``results.sqlite`` (``gtn_nas.store``) as each architecture finishes; rerunning the same
command skips finished indices, so a killed search resumes without a lost or duplicated row. At the
end (Ctrl-C included) ``leaderboard.csv``, ``top/NN.json`` (what ``gtn-nas retrain --arch``
reads) and ``summary.json`` are rewritten from the database.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import socket
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from gtn_nas.config import SearchConfig, build_config
from gtn_nas.errors import CheckpointError, ConfigError
from gtn_nas.runs import check_writable, open_run_dir, write_atomic, write_json
from gtn_nas.store import Row, Store, score_column
from gtn_nas.ui import Reporter

# Options that may change between the invocation that created a search directory and one that
# resumes it: they change how much is done or written, not any score.
RESUMABLE_KEYS = {"budget", "time_budget", "data_dir", "out", "top_k", "proxies", "preset",
                  "num_shards", "shard", "workers"}


def search_config(preset: str, overrides: dict[str, Any]) -> SearchConfig:
    """The command's config: preset values, then the user's options (None = not given).

    A ``--time-budget`` or ``--arch`` list without ``--budget`` drops the preset's count limit.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.get("budget") is None and (given.get("time_budget") is not None or given.get("archs")):
        given["budget"] = 0
    return build_config(SearchConfig, "search", preset, given)


def architecture_keys(seed: int, index: int) -> tuple[jax.Array, jax.Array]:
    """(k_arch, k_train) of architecture ``index``: split(fold_in(PRNGKey(seed), index))."""
    k_arch, k_train = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), index))
    return k_arch, k_train


def genotype_at(space, cfg: SearchConfig, index: int):
    """The genotype of architecture ``index`` (sampled, or the index-th ``--arch`` string)."""
    if cfg.archs:
        return space.from_str(cfg.archs[index])
    return space.sample(architecture_keys(cfg.seed, index)[0])


def _check_gtn(cfg: SearchConfig):
    """The search's GTN, loaded (finite) and matching ``--dataset``: before anything is written.
    Returns load_gtn's (config, teacher, meta-parameters, step)."""
    from gtn_nas.meta_train import load_gtn

    gtn = load_gtn(cfg.gtn, cfg.checkpoint)
    mcfg = gtn[0]
    if cfg.dataset is not None and cfg.dataset != mcfg.dataset:
        raise ConfigError(f"the GTN in {cfg.gtn} was meta-trained on {mcfg.dataset}, not "
                          f"{cfg.dataset}; search with a GTN of {cfg.dataset} or drop --dataset")
    return gtn


def _load_gtn(gtn_dir: str, step: int | None, loaded):
    """The GTN ``loaded`` by ``_check_gtn``, or its checkpoint at ``step`` (a resumed search
    keeps the GTN it began with)."""
    from gtn_nas.checkpoint import Checkpointer
    from gtn_nas.meta_train import init_meta_state

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
    ckpt = Checkpointer(where)
    state = ckpt.restore(step, init_meta_state(mcfg, teacher, jax.random.PRNGKey(0)))
    ckpt.close()
    return mcfg, teacher, jax.tree_util.tree_map(jnp.asarray, state.meta_params), step


def lowered_flops(module, input_shape) -> float:
    """Forward FLOPs per image (eval mode, batch 1) from XLA's cost analysis of the *lowered*
    program: no compilation, so cheap enough for every architecture of a search."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    variables = jax.eval_shape(lambda k: module.init(k, jnp.zeros(x.shape), train=False),
                               jax.random.PRNGKey(0))
    cost = jax.jit(lambda v, x: module.apply(v, x, train=False)).lower(variables, x).cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


# Compiled proxy programs, shared by every Scorer in this process (a resumed or repeated search
# in one process compiles nothing twice), least recently used first out.
_PROGRAMS: "OrderedDict[tuple, Any]" = OrderedDict()
MAX_PROGRAMS = 16


def _cached_program(cache_key: tuple, build: Callable[[], tuple[Any, float]]) -> tuple[Any, float]:
    """(program, seconds compiling it now): from ``_PROGRAMS``, or built by ``build()`` and kept.

    Keys name everything a program bakes in; the convolution form, read from $GTN_NAS_CONV at
    trace time, is added here for all of them."""
    from gtn_nas.nn.spatial import conv_setting

    cache_key = (*cache_key, ("conv", conv_setting()))
    if cache_key in _PROGRAMS:
        _PROGRAMS.move_to_end(cache_key)
        return _PROGRAMS[cache_key], 0.0
    program, seconds = build()
    _PROGRAMS[cache_key] = program
    while len(_PROGRAMS) > MAX_PROGRAMS:
        _PROGRAMS.popitem(last=False)
    return program, seconds


def _signature(tree) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return (str(treedef),) + tuple((tuple(np.shape(x)), str(jnp.asarray(x).dtype)) for x in leaves)


class Scorer:
    """Compiles and runs the proxies of one search: ``score(index, genotype, proxies, key)``.

    Everything large (meta-parameters, validation subset, training images) is an *argument* of
    the compiled programs, never a captured constant: compiling stays cheap and a program's HLO
    does not depend on data values, so XLA's persistent cache serves a resumed search.
    """

    def __init__(self, cfg: SearchConfig, space, teacher, meta, data, sizes: dict[str, Any],
                 steps: int, real_steps: int, real_batch: int, program: str):
        from gtn_nas.training import subset

        self.cfg, self.space, self.teacher = cfg, space, teacher
        self.sizes, self.steps, self.real_steps, self.real_batch = sizes, steps, real_steps, real_batch
        self.program = program
        self.mean, self.std, self.classes = tuple(data.mean), tuple(data.std), data.num_classes
        v_img, v_lab = subset(data.validation.images, data.validation.labels, cfg.eval_subset)
        self.chunk = min(1000, len(v_lab))
        self.args = {  # the compiled programs' array arguments
            "meta": meta,
            "val": (jnp.asarray(v_img), jnp.asarray(v_lab)),  # [V, H, W, C] uint8, [V]
            "train": (jnp.asarray(data.train.images), jnp.asarray(data.train.labels)),
            "opt": (jnp.float32(cfg.real_lr), jnp.float32(cfg.real_momentum)),
        }
        self._args_sig = _signature(self.args)
        self._batch_fns: dict[str, Any] = {}

    def _proxy_fn(self, proxy: str, learner_of: Callable[[Any], Any]):
        """proxy(args, arch, key) -> validation accuracy of a fresh learner trained by ``proxy``."""
        from gtn_nas.training import score, train_on_real, train_on_teacher

        teacher, steps, real_steps, batch = self.teacher, self.steps, self.real_steps, self.real_batch
        mean, std, chunk, classes = self.mean, self.std, self.chunk, self.classes

        def run(args, arch, key):
            learner = learner_of(arch)
            if proxy == "gtn":
                st = train_on_teacher(teacher, learner, args["meta"], key, steps)
            else:
                lr, mom = args["opt"]
                st = train_on_real(learner, *args["train"], key, steps=real_steps, batch=batch,
                                   lr=lr, momentum=mom, mean=mean, std=std, num_classes=classes,
                                   schedule=self.cfg.real_schedule)
            return score(learner, st, *args["val"], mean, std, chunk)

        return run

    def _learner_of(self, genotype, shared: bool) -> Callable[[Any], Any]:
        """``arch -> Learner``: the NB201 supernet whose architecture is a runtime argument
        (``shared``), or the genotype's own network whatever ``arch`` is."""
        c, n, shape = self.sizes["channels"], self.sizes["cells"], tuple(self.sizes["input_shape"])
        if shared:
            from search_spaces import nb201

            return lambda arch: nb201.shared_learner(arch, c, n, self.classes, shape)
        learner = self.space.learner(genotype, c, n, self.classes, shape)
        return lambda arch: learner

    def _compiled_shared(self, proxy: str, arch, key) -> tuple[Any, float]:
        """The whole of ``proxy`` for the shared supernet as one compiled program (accelerators:
        the inner loop is a scan), and the seconds spent compiling it now (0 when cached)."""
        c, n, shape = self.sizes["channels"], self.sizes["cells"], tuple(self.sizes["input_shape"])
        cache_key = (proxy, "shared", self.space.name, c, n, shape, self.classes, self.teacher,
                     self.steps, self.real_steps, self.real_batch, self.cfg.real_schedule,
                     self.mean, self.std, self.chunk, self._args_sig)

        def build():
            fn = self._proxy_fn(proxy, self._learner_of(None, shared=True))
            t0 = time.perf_counter()
            compiled = jax.jit(fn).lower(self.args, arch, key).compile()
            return compiled, time.perf_counter() - t0

        return _cached_program(cache_key, build)

    def _batches(self, proxy: str, key) -> tuple[Any, float]:
        """(k_init, xs, ys, lrs, moms) of ``proxy`` for a learner keyed ``key``, from a program
        compiled once per search; and the seconds compiling it took now."""
        from gtn_nas.training import lr_schedule, real_batches

        if proxy not in self._batch_fns:
            teacher, steps, real_steps, batch = self.teacher, self.steps, self.real_steps, self.real_batch
            mean, std, classes = self.mean, self.std, self.classes
            schedule = self.cfg.real_schedule

            def fn(args, key):
                k_init, k_data = jax.random.split(key)
                if proxy == "gtn":
                    xs, ys = teacher.generate(args["meta"], k_data)
                    lrs, moms = teacher.schedule(args["meta"])
                    return k_init, xs[:steps], ys[:steps], lrs[:steps], moms[:steps]
                xs, ys = real_batches(k_data, *args["train"], real_steps, batch, mean, std)
                lr, mom = args["opt"]
                return (k_init, xs, jax.nn.one_hot(ys, classes),
                        lr_schedule(lr, real_steps, schedule), jnp.full((real_steps,), mom))

            t0 = time.perf_counter()
            self._batch_fns[proxy] = jax.jit(fn).lower(self.args, key).compile()
            return self._batch_fns[proxy](self.args, key), time.perf_counter() - t0
        return self._batch_fns[proxy](self.args, key), 0.0

    def _stepped(self, genotype, key, arch) -> tuple[Any, float]:
        """The SteppedLearner of the genotype (``arch`` None) or of the shared supernet (compiled
        once, cached) and the seconds compiling it took now."""
        from gtn_nas.training import SteppedLearner

        c, n, shape = self.sizes["channels"], self.sizes["cells"], tuple(self.sizes["input_shape"])
        batches = (self.teacher.batch_size, self.real_batch)
        which = "shared" if arch is not None else genotype.to_str()
        cache_key = ("stepped", self.space.name, which, c, n, shape, self.classes,
                     batches, self.mean, self.std, self.chunk)

        def build():
            stepped = SteppedLearner(self._learner_of(genotype, shared=arch is not None),
                                     self.mean, self.std, self.chunk)
            return stepped, stepped.compile(key, batches, shape, self.classes,
                                            self.args["val"][0].dtype, arch)

        return _cached_program(cache_key, build)

    def _run(self, proxy: str, genotype, key) -> tuple[float, float, float]:
        """(score, train seconds, compile seconds) of one trainable proxy."""
        arch = None
        if self.program == "shared":
            from search_spaces import nb201

            arch = jnp.asarray(nb201.encode(genotype))  # int32 [6]: an argument, not a constant
        if self.program == "exact" or jax.default_backend() == "cpu":
            stepped, compile_s = self._stepped(genotype, key, arch)
            (k_init, xs, ys, lrs, moms), batch_compile_s = self._batches(proxy, key)
            t0 = time.perf_counter()
            st = stepped.train(k_init, xs, ys, lrs, moms, arch)
            value = stepped.accuracy(st, *self.args["val"], arch)
            return value, time.perf_counter() - t0, compile_s + batch_compile_s
        compiled, compile_s = self._compiled_shared(proxy, arch, key)
        t0 = time.perf_counter()
        value = float(compiled(self.args, arch, key))
        return value, time.perf_counter() - t0, compile_s

    def score(self, index: int, genotype, proxies, k_train) -> Row:
        """One architecture's row: genotype, size, FLOPs and the columns of ``proxies``."""
        from search_spaces import count_params

        t0 = time.perf_counter()
        shape = tuple(self.sizes["input_shape"])
        module = self.space.build(genotype, self.sizes["channels"], self.sizes["cells"],
                                  self.classes, shape)
        row: Row = {"idx": index, "genotype": genotype.to_str(), "space": self.space.name,
                    "params": count_params(module, shape), "flops": lowered_flops(module, shape)}
        for proxy in proxies:
            if proxy == "params":
                continue
            value, train_s, compile_s = self._run(proxy, genotype, k_train)
            row.update({f"{proxy}_score": value, f"{proxy}_train_s": train_s,
                        f"{proxy}_compile_s": compile_s})
        row["seconds"] = time.perf_counter() - t0
        return row


def _resolve_sizes(cfg: SearchConfig, mcfg, space, image_shape) -> dict[str, Any]:
    same = mcfg.learner == space.name  # the GTN was meta-trained on this space's learners
    channels = cfg.channels or (mcfg.learner_width if same and mcfg.learner_width else
                                space.defaults.channels)
    cells = cfg.cells or (mcfg.learner_cells if same else space.defaults.cells)
    return {"channels": int(channels), "cells": int(cells), "input_shape": list(image_shape)}


def _resolve_program(cfg: SearchConfig) -> str:
    if cfg.program != "auto":
        return cfg.program
    return "shared" if cfg.space == "nb201" and jax.default_backend() != "cpu" else "exact"


def shard_of(cfg: SearchConfig) -> tuple[int, int]:
    """(shard, num_shards) of this process: the options, else JAX's launch variables."""
    from gtn_nas import distributed as dist

    if cfg.shard is not None or cfg.num_shards > 1:
        return cfg.shard or 0, cfg.num_shards
    n, i = dist.env_int(dist.ENV_NUM_PROCESSES), dist.env_int(dist.ENV_PROCESS_ID)
    if n is None or n <= 1:
        return 0, 1
    if i is None or not 0 <= i < n:
        raise ConfigError(f"${dist.ENV_NUM_PROCESSES}={n} needs ${dist.ENV_PROCESS_ID} in "
                          f"[0, {n}), got {i}")
    return i, n


def claim_shard(run_dir: Path, shard: int, num_shards: int):
    """Holds an exclusive POSIX lock on the search's shard for this process's lifetime, so a
    second `gtn-nas search` on the same --out and shard is refused instead of scoring the same
    indices again. Returns the open lock file (closing it releases the lock)."""
    import fcntl

    path = run_dir / f".shard-{shard}-of-{num_shards}.lock"
    f = open(path, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise ConfigError(f"another `gtn-nas search` ({holder}) is scoring shard {shard} of "
                          f"{num_shards} in {run_dir}; wait for it to finish (then run again to "
                          "resume), or split the work with --num-shards N --shard I") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}")
    f.flush()
    return f


def index_stop(cfg: SearchConfig) -> int | None:
    """One past the last architecture index of the search (None: no count limit)."""
    return (cfg.budget or len(cfg.archs)) or None


def _indices(cfg: SearchConfig, shard: int = 0, num_shards: int = 1) -> Iterator[int]:
    """This shard's architecture indices, in order: i % num_shards == shard."""
    stop = index_stop(cfg)
    every = range(stop) if stop else itertools.count()
    return itertools.islice(every, shard, None, num_shards)


def search(cfg: SearchConfig, reporter: Reporter | None = None,
           on_row: Callable[[Row], None] | None = None, worker: bool = False) -> dict[str, Any]:
    """Runs (or resumes) a search; returns the summary also saved as ``summary.json``.

    ``on_row`` is called after each committed row (tests use it to interrupt a search).
    ``worker``: a fan-out child (``gtn_nas.fanout``) that only adds rows to an existing search
    directory; its parent writes the config, leaderboard and summary.
    """
    from search_spaces import get_space

    from gtn_nas.data import load_dataset

    started = time.time()  # --time-budget bounds the whole invocation, worker processes included
    rep = reporter or Reporter(quiet=True)
    space = get_space(cfg.space)
    if not worker:
        check_writable(cfg.out)
    gtn = _check_gtn(cfg)  # refused: nothing is written that would block the corrected command
    if worker:
        run_dir, resumed = Path(cfg.out), True
    else:
        run_dir, resumed = open_run_dir(cfg, cfg.out, ignore=RESUMABLE_KEYS)
    claim = None if worker else claim_shard(run_dir, *shard_of(cfg))
    try:
        if cfg.workers > 1:
            from gtn_nas.fanout import run_workers

            run_workers(cfg, rep, run_dir, *shard_of(cfg))
        store = Store(run_dir / "results.sqlite")
        try:
            return _search(cfg, rep, space, run_dir, resumed, store, on_row, load_dataset, worker,
                           started, gtn)
        finally:
            store.close()
    finally:
        if claim is not None:
            claim.close()  # closing the file releases the lock


def _search(cfg, rep, space, run_dir: Path, resumed: bool, store: Store, on_row, load_dataset,
            worker: bool = False, started: float | None = None, gtn=None):
    mcfg, teacher, meta, gtn_step = _load_gtn(cfg.gtn, store.get_meta("id.gtn_step"),
                                              gtn or _check_gtn(cfg))
    data = load_dataset(mcfg.dataset, cfg.data_dir or mcfg.data_dir, mcfg.split_seed)
    gen_shape = tuple(teacher.generator.image_shape)
    if tuple(data.image_shape) != gen_shape:
        raise ConfigError(f"the GTN in {cfg.gtn} generates {'x'.join(map(str, gen_shape))} images "
                          f"but the {mcfg.dataset} data from {data.source} is "
                          f"{'x'.join(map(str, data.image_shape))}")
    steps = cfg.steps or mcfg.inner_steps
    if steps > mcfg.inner_steps:
        raise ConfigError(f"--steps {steps} exceeds the GTN's curriculum length {mcfg.inner_steps}")
    real_steps = cfg.real_steps or steps
    real_batch = cfg.real_batch_size or mcfg.batch_size
    sizes = _resolve_sizes(cfg, mcfg, space, data.image_shape)
    program = _resolve_program(cfg)
    identity = {
        "space": space.name, "seed": cfg.seed, "archs": list(cfg.archs),
        "gtn_run": str(Path(cfg.gtn).resolve()), "gtn_step": gtn_step, "dataset": mcfg.dataset,
        "split_seed": mcfg.split_seed, **sizes, "steps": steps, "real_steps": real_steps,
        "real_batch_size": real_batch, "real_lr": cfg.real_lr,
        "real_momentum": cfg.real_momentum, "real_schedule": cfg.real_schedule,
        "eval_subset": cfg.eval_subset, "program": program,
    }
    store.bind(identity)
    scorer = Scorer(cfg, space, teacher, meta, data, sizes, steps, real_steps, real_batch, program)
    primary = cfg.proxies[0]
    done = store.done(cfg.proxies)
    existing = {r["idx"]: r for r in store.rows()}
    shard, num_shards = shard_of(cfg)
    stop = index_stop(cfg)
    total = len(range(shard, stop, num_shards)) if stop else None
    completed = len([i for i in done if (stop is None or i < stop) and i % num_shards == shard])
    worker_id = f"{socket.gethostname()}:{os.getpid()}/{shard}of{num_shards}"
    if resumed and completed:
        rep.info(f"resuming {run_dir}: {completed} architectures already scored")
    rep.info(f"search: {space.name} C={sizes['channels']} N={sizes['cells']}, proxies "
             f"{','.join(cfg.proxies)}, gtn {steps} steps, program {program}, GTN step {gtn_step}")

    best = max((r for r in existing.values() if r.get(score_column(primary)) is not None),
               key=lambda r: r[score_column(primary)], default=None)
    new_rows: list[Row] = []
    t_start = time.time()
    started = t_start if started is None else started
    interrupted = False
    try:
        with rep.progress("search", total=total, completed=completed) as bar:
            for i in _indices(cfg, shard, num_shards):
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
                missing = [p for p in cfg.proxies
                           if old is None or old.get(score_column(p)) is None]
                row = scorer.score(i, genotype, missing, architecture_keys(cfg.seed, i)[1])
                row["worker"] = worker_id
                store.put(row)
                new_rows.append(row)
                full = {**(old or {}), **{k: v for k, v in row.items() if v is not None}}
                if best is None or full[score_column(primary)] > best[score_column(primary)]:
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
        board = [] if worker else export(run_dir, rows, cfg, identity)
    if interrupted:
        rep.info(f"interrupted after {len(new_rows)} new architectures; run the same command "
                 "again to resume")
        raise KeyboardInterrupt
    wall = time.time() - t_start
    summary = _summary(cfg, run_dir, rows, new_rows, board, identity, wall)
    if worker:
        return summary
    if num_shards > 1:
        summary.update(shard=shard, num_shards=num_shards)
    write_json(run_dir / "summary.json", summary)
    _report(rep, cfg, board, summary)
    return summary


# ---------------------------------------------------------------------------------------------
# Export: leaderboard.csv, top/NN.json, summary


def _proxy_columns(rows: list[Row]) -> list[str]:
    return [p for p in ("gtn", "real") if any(r.get(f"{p}_score") is not None for r in rows)]


def leaderboard(rows: list[Row], ranked_by: str) -> list[Row]:
    """Rows holding a ``ranked_by`` score, best first (ties: lower index first)."""
    col = score_column(ranked_by)
    scored = [r for r in rows if r.get(col) is not None]
    return sorted(scored, key=lambda r: (-r[col], r["idx"]))


def export(run_dir: Path, rows: list[Row], cfg: SearchConfig, identity: dict) -> list[Row]:
    """Writes leaderboard.csv and top/NN.json from ``rows``; returns the leaderboard."""
    board = leaderboard(rows, cfg.proxies[0])
    proxies = _proxy_columns(rows)
    header = (["rank", "index", "arch", "space", "params", "flops"] + proxies
              + [f"{p}_{k}" for p in proxies for k in ("train_s", "compile_s")] + ["seconds"])
    lines = [header]
    for rank, r in enumerate(board, start=1):
        lines.append([rank, r["idx"], r["genotype"], r["space"], r["params"], r["flops"]]
                     + [r.get(f"{p}_score") for p in proxies]
                     + [r.get(f"{p}_{k}") for p in proxies for k in ("train_s", "compile_s")]
                     + [r.get("seconds")])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(
        [["" if v is None else v for v in line] for line in lines])
    write_atomic(run_dir / "leaderboard.csv", buf.getvalue())

    top = run_dir / "top"
    top.mkdir(exist_ok=True)
    for old in top.glob("*.json"):
        old.unlink()
    width = max(2, len(str(min(cfg.top_k, len(board)))))
    for rank, r in enumerate(board[:cfg.top_k], start=1):
        write_json(top / f"{rank:0{width}d}.json", top_record(r, rank, cfg, identity))
    return board


def top_record(r: Row, rank: int, cfg: SearchConfig, identity: dict) -> dict[str, Any]:
    """What ``top/NN.json`` holds: the genotype, its space and sizes, scores, provenance."""
    scores = {p: r.get(score_column(p)) for p in ("gtn", "real", "params")
              if r.get(score_column(p)) is not None}
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


def _summary(cfg, run_dir, rows, new_rows, board, identity, wall) -> dict[str, Any]:
    best = board[0] if board else None
    out = {
        "search_dir": str(run_dir), "space": identity["space"], "dataset": identity["dataset"],
        "gtn_run": identity["gtn_run"], "gtn_step": identity["gtn_step"],
        "channels": identity["channels"], "cells": identity["cells"],
        "program": identity["program"], "proxies": list(cfg.proxies), "ranked_by": cfg.proxies[0],
        "architectures": len(rows), "scored_now": len(new_rows),
        "best_arch": best["genotype"] if best else None,
        "best_score": best[score_column(cfg.proxies[0])] if best else None,
        "best_index": best["idx"] if best else None,
        "wall_seconds": round(wall, 1),
        "archs_per_minute": round(60 * len(new_rows) / wall, 2) if new_rows and wall > 0 else None,
    }
    for p in ("gtn", "real"):
        if any(r.get(f"{p}_score") is not None for r in rows):
            out[f"{p}_train_s_mean"] = _mean(rows, f"{p}_train_s")
            out[f"{p}_compile_s_mean"] = _mean(rows, f"{p}_compile_s")
    out["leaderboard"] = str(run_dir / "leaderboard.csv")
    return out


def _report(rep: Reporter, cfg: SearchConfig, board: list[Row], summary: dict) -> None:
    proxies = _proxy_columns(board)
    table = []
    for rank, r in enumerate(board[:cfg.top_k], start=1):
        entry: dict[str, Any] = {"rank": rank, "index": r["idx"], "params": r["params"]}
        entry.update({p: r[f"{p}_score"] for p in proxies})
        entry["arch"] = r["genotype"]
        table.append(entry)
    rep.table(f"leaderboard (by {cfg.proxies[0]}, top {min(cfg.top_k, len(board))} of "
              f"{len(board)})", table)
    rep.summary("search summary", {k: v for k, v in summary.items() if v is not None})


__all__ = ["RESUMABLE_KEYS", "Scorer", "architecture_keys", "export", "genotype_at",
           "index_stop", "leaderboard", "lowered_flops", "search", "search_config", "shard_of", "top_record"]
