"""Search fan-out: independent architecture evaluations spread over local worker processes.

``gtn-nas search --workers N`` splits this process's share of the indices (``shard`` of
``num_shards``) N ways: worker w scores the indices of shard ``shard * N + w`` of
``num_shards * N`` in a process of its own, pinned to one GPU when there are GPUs, and commits
rows to the search's one ``results.sqlite`` (WAL, upserts keyed by index: disjoint index sets,
no lost or duplicated row). The parent touches no accelerator while they run: it follows the
store to draw the progress bar, then writes the leaderboard and summary as a one-process search
would. Killing the parent stops the workers (Ctrl-C and SIGTERM through the parent, kill -9
through the kernel: each worker gets SIGTERM when its parent dies); each worker holds its own
shard's lock, so a rerun never scores beside one that is still finishing; rerunning the command
resumes every shard.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from gtn_nas.config import SearchConfig
from gtn_nas.errors import GtnError
from gtn_nas.io.runs import write_atomic
from gtn_nas.io import signals
from gtn_nas.io.signals import ENV_PARENT
from gtn_nas.io.ui import Reporter
from gtn_nas.search.indices import index_stop
from gtn_nas.search.store import Store

POLL_SECONDS = 1.0


def local_gpus() -> list[str]:
    """GPU ids a worker can be pinned to, found without initialising JAX in this process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() not in ("", "-1")]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def worker_configs(cfg: SearchConfig, shard: int, num_shards: int) -> list[SearchConfig]:
    n = cfg.workers
    return [dataclasses.replace(cfg, workers=1, num_shards=num_shards * n, shard=shard * n + w)
            for w in range(n)]


def _done_in(store, configs: list[SearchConfig], stop: int | None) -> int:
    """Finished indices of these workers' shards, below ``stop``."""
    mine = {(c.shard, c.num_shards) for c in configs}
    return sum(1 for i in store.done(configs[0].scored_proxies) if (stop is None or i < stop)
               and any(i % n == s for s, n in mine))


def run_workers(cfg: SearchConfig, rep: Reporter, run_dir: Path, shard: int, num_shards: int,
                entry: list[str]) -> None:
    """Runs ``cfg.workers`` worker processes to completion (or raises the first one's error).

    ``entry``: the command line of one worker, completed by the path of its config JSON (the
    search command's own module: this module does not import the command that drives it)."""
    configs = worker_configs(cfg, shard, num_shards)
    gpus = local_gpus()
    if gpus and len(gpus) < len(configs):
        rep.info(f"{len(configs)} workers share {len(gpus)} GPU(s)")
    folder = run_dir / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    stop = index_stop(cfg)
    total = (sum(len(range(c.shard, stop, c.num_shards)) for c in configs) if stop else None)
    procs: list[tuple[subprocess.Popen, Path]] = []
    try:
        for w, child in enumerate(configs):
            cfg_path = folder / f"{w:02d}.json"
            write_atomic(cfg_path, json.dumps(dataclasses.asdict(child), indent=2))
            env = dict(os.environ)
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[w % len(gpus)]
            log_path = folder / f"{w:02d}.log"
            env[ENV_PARENT] = str(os.getpid())  # the worker dies with this process
            with open(log_path, "w") as log:
                proc = subprocess.Popen([*entry, str(cfg_path)], env=env, stdout=log,
                                        stderr=subprocess.STDOUT)
            procs.append((proc, log_path))
        rep.info(f"search fan-out: {len(procs)} worker processes"
                 + (f" on GPUs {','.join(gpus)}" if gpus else "") + f"; logs in {folder}")
        with Store(run_dir / "results.sqlite") as store:  # one reader for the whole poll
            start = _done_in(store, configs, stop)
            t0 = time.time()
            with rep.progress("search", total=total, completed=start) as bar:
                shown, mark = start, signals.received()
                while any(p.poll() is None for p, _ in procs):
                    signals.raise_if_received_since(mark)
                    time.sleep(POLL_SECONDS)
                    now = _done_in(store, configs, stop)
                    rate = 60.0 * (now - start) / max(time.time() - t0, 1e-9)
                    bar.update(now - shown, rate=f"{rate:.1f} arch/min")
                    shown = now
                    if any(p.poll() not in (None, 0) for p, _ in procs):
                        break
                bar.update(_done_in(store, configs, stop) - shown)
    except KeyboardInterrupt:
        _stop(procs)
        raise
    failed = [(p, log) for p, log in procs if p.poll() not in (None, 0)]
    if failed:
        _stop(procs)
        proc, log = failed[0]
        raise GtnError(f"search worker {procs.index((proc, log))} exited with code "
                       f"{proc.returncode}: {_last_line(log)} (log: {log}); rerun the same "
                       "command to resume")


def _stop(procs) -> None:
    for p, _ in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)  # a worker commits its finished rows and exits
    for p, _ in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()


def _last_line(path: Path) -> str:
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"
