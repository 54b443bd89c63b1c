"""Fault and bad-input sweep of the gtn-nas command line (the classes of issue #40).

    python benchmarks/fault_sweep.py                         # the code of this repository
    python benchmarks/fault_sweep.py --root /path/to/clone   # another checkout (e.g. a baseline)
    python benchmarks/fault_sweep.py --only 7-sigterm        # the cases whose id holds a substring
    python benchmarks/fault_sweep.py --list                  # the case ids, nothing run

Every case runs the real command line in a child process, exactly as a user would:
``PY -c "import sys; sys.path.insert(0, ROOT); import cli; cli.main()" ARGS`` with
``PYTHONPATH=ROOT``, ``JAX_PLATFORMS=cpu``, ``GTN_NAS_NO_DOWNLOAD=1``, the data and XLA caches in
the sweep's own folder, ``--preset tiny`` everywhere, and its working directory a fresh empty
folder (which must still be empty afterwards). The shared fixtures (a tiny meta-train run on
MNIST and one on CIFAR-10, a tiny GTN search, a zero-cost CIFAR-10 search, a tiny retrain, the
uninterrupted reference runs, damaged copies of the data) are built once per sweep, when a case
first needs them; a case that may write into a run works on its own copy.

The promises each case is judged against (a case passes only if its promise holds):

- bad input or environment: exactly one non-empty stderr line, starting with ``error: ``, and
  exit code 2 (no usage box); a Python traceback on stderr is a fail in every case;
- Ctrl-C (SIGINT) and SIGTERM during a long command: exit 130, and the same command run again
  ends with the same result as an uninterrupted run (summary.json's numbers, the last
  checkpoint's leaves, results.sqlite rows);
- nothing outside the named output is created, replaced or destroyed (special files are a fifo
  and a symlink to /dev/null in a temporary folder, never a real device node);
- a damaged input (flipped byte, truncated or halved file, missing key or wrong type in a JSON)
  is refused with one error line, never loaded with changed numbers and exit 0.

Classes: 1 special output files, 2 two runs on one directory, 3 a stopped-and-resumed run equals
an uninterrupted one, 4 damaged inputs, 5 invalid option values, 6 outputs in a folder that does
not exist yet, 7 tracebacks (signals, locks, hand-edited run files, odd strings), 8 orphaned
worker processes, 9 messages that send the user the wrong way, 10 the cost of ``--preset tiny``.

Output in ``--out`` (default ``runs/fault-sweep``, wiped at the start; a folder without the
sweep's marker file is refused): ``results.json`` (every case with its commands, exit codes,
stderr heads and the reasons of a fail), ``results.md`` (one row per case), ``cases/<id>/``
(each case's files and logs), ``fixtures/``. Per-class pass/fail counts are printed at the end;
the exit code is 1 when any case failed. About 20-25 minutes on 2 cores at ``--jobs 1``.

To add a case: write a function ``def c_xxx(c: Case)`` that runs commands with ``c.cli(...)``
(or ``c.start(...)`` for a background process) and states its promise with ``c.check(...)``,
``c.expect_error(...)`` or ``c.expect_interrupted(...)``; register it with
``@case("N-some-id", N, "what must hold")``. Fixtures: ``c.fx("gtn")`` etc. (``FIXTURES``).
Only the standard library and numpy are used here; checkpoints are read with orbax (the
project's own dependency) in a child process of the tested code's Python.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import math
import os
import random
import re
import select
import shlex
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
MARKER = ".fault-sweep"
TRACEBACK = "Traceback (most recent call last)"
ARCH = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"
EVAL_FAST = ["--num-seeds", "1", "--no-curve", "--real-lrs", "0.1", "--real-momentums", "0.9"]
CLASSES = {
    1: "special output files",
    2: "two runs on one directory",
    3: "stop and resume = uninterrupted",
    4: "damaged inputs",
    5: "invalid values",
    6: "output folder that does not exist yet",
    7: "tracebacks",
    8: "orphaned workers",
    9: "messages",
    10: "tiny preset cost",
}
DEFAULT_TIMEOUT = 300.0
RTOL, ATOL = 1e-4, 1e-6  # "the same result": float rounding of a resumed program, nothing more

# Read the leaves of two orbax step folders (``<run>/checkpoints/<step>/default``) and compare
# them leaf by leaf; run with the tested code's Python, which has orbax.
CKPT_DIFF = r"""
import json, sys
import numpy as np
import orbax.checkpoint as ocp
rtol, atol = float(sys.argv[3]), float(sys.argv[4])
ck = ocp.StandardCheckpointer()
la = ck.restore(sys.argv[1])["leaves"]
lb = ck.restore(sys.argv[2])["leaves"]
res = {"leaves": [len(la), len(lb)], "same_shapes": len(la) == len(lb)
       and all(np.shape(x) == np.shape(y) for x, y in zip(la, lb))}
if res["same_shapes"]:
    worst, bad, max_abs = 0.0, 0, 0.0
    for x, y in zip(la, lb):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.size == 0:
            continue
        d = np.abs(x - y)
        max_abs = max(max_abs, float(d.max()))
        ratio = float((d / (atol + rtol * np.abs(x))).max())
        worst = max(worst, ratio)
        bad += int(ratio > 1)
    res.update(max_abs=max_abs, worst_ratio=worst, leaves_off=bad)
print(json.dumps(res))
"""


# ---------------------------------------------------------------------------------------------
# Running commands


@dataclass
class Run:
    argv: list[str]
    rc: int | None
    stdout: str
    stderr: str
    wall: float
    timed_out: bool = False
    label: str = ""

    def lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.strip()]

    @property
    def first(self) -> str:
        lines = self.lines()
        return lines[0][:300] if lines else ""


class Proc:
    """A command started in the background (its own session, output to files)."""

    def __init__(self, sweep: "Sweep", argv: list[str], cwd: Path, env: dict, log: Path, label: str):
        self.sweep, self.argv, self.cwd, self.label = sweep, argv, cwd, label
        self.out_path, self.err_path = log.with_suffix(".stdout"), log.with_suffix(".stderr")
        self._out, self._err = open(self.out_path, "wb"), open(self.err_path, "wb")
        self.t0 = time.time()
        self.popen = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self._out, stderr=self._err,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        sweep.track(self.popen)
        self.pid = self.popen.pid

    def poll(self):
        return self.popen.poll()

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> Run:
        timed_out = False
        try:
            self.popen.wait(timeout=max(0.1, timeout - (time.time() - self.t0)))
        except subprocess.TimeoutExpired:
            timed_out = True
            self.sweep.kill_group(self.popen)
            self.popen.wait()
        wall = time.time() - self.t0
        self._out.close()
        self._err.close()
        self.sweep.untrack(self.popen)
        read = lambda p: p.read_bytes().decode("utf-8", "replace")  # noqa: E731
        return Run(self.argv, None if timed_out else self.popen.returncode, read(self.out_path),
                   read(self.err_path), wall, timed_out, self.label)


class FifoDrain:
    """Keeps a reader on a fifo so that a command that writes into it does not block forever."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.bytes = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                continue
            if chunk:
                self.bytes += len(chunk)
            else:
                time.sleep(0.05)  # no writer at the moment

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        os.close(self.fd)


class FixtureError(Exception):
    pass


class Sweep:
    def __init__(self, args):
        self.root = Path(args.root).resolve()
        self.data = Path(args.data_dir).resolve()
        self.out = Path(args.out).resolve()
        self.python = args.python
        self.fixtures_dir = self.out / "fixtures"
        self.cases_dir = self.out / "cases"
        self.xla_cache = self.out / "xla-cache"
        self.data_cache = self.out / "data-cache"
        self.env = dict(os.environ)
        for k in ("GTN_NAS_DATA_DIR", "GTN_NAS_MALLOC", "GTN_NAS_CONV", "GTN_NAS_LAYOUT",
                  "XLA_FLAGS", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
            self.env.pop(k, None)
        self.env.update({
            "PYTHONPATH": str(self.root), "JAX_PLATFORMS": "cpu", "GTN_NAS_NO_DOWNLOAD": "1",
            "GTN_NAS_XLA_CACHE": str(self.xla_cache), "GTN_NAS_CACHE_DIR": str(self.data_cache),
            "GTN_NAS_DATA_DIR": str(self.data), "COLUMNS": "200", "PYTHONUNBUFFERED": "1",
        })
        self._procs: set[subprocess.Popen] = set()
        self._procs_lock = threading.Lock()
        self._fixtures: dict[str, object] = {}
        self._fixture_locks: dict[str, threading.Lock] = {n: threading.Lock() for n in FIXTURES}
        self.fixture_log: list[dict] = []

    def argv(self, args: list) -> list[str]:
        boot = f"import sys; sys.path.insert(0, {str(self.root)!r}); import cli; cli.main()"
        return [self.python, "-c", boot, *[str(a) for a in args]]

    def track(self, p) -> None:
        with self._procs_lock:
            self._procs.add(p)

    def untrack(self, p) -> None:
        with self._procs_lock:
            self._procs.discard(p)

    @staticmethod
    def kill_group(p: subprocess.Popen) -> None:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the session this sweep started for it
        except (ProcessLookupError, PermissionError):
            pass

    def kill_all(self) -> None:
        with self._procs_lock:
            procs = list(self._procs)
        for p in procs:
            self.kill_group(p)

    def fixture(self, name: str):
        with self._fixture_locks[name]:
            if name not in self._fixtures:
                t0 = time.time()
                try:
                    self._fixtures[name] = FIXTURES[name](self)
                except FixtureError as e:
                    self._fixtures[name] = e
                self.fixture_log.append({"fixture": name, "seconds": round(time.time() - t0, 1),
                                         "ok": not isinstance(self._fixtures[name], FixtureError)})
            got = self._fixtures[name]
        if isinstance(got, FixtureError):
            raise got
        return got

    def run_fixture(self, name: str, args: list, timeout: float = 600) -> Run:
        folder = self.fixtures_dir / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        cwd = folder / f"{name}.cwd"
        cwd.mkdir(exist_ok=True)
        r = Proc(self, self.argv(args), cwd, self.env, folder / name, name).wait(timeout)
        if r.rc != 0 or TRACEBACK in r.stderr:
            raise FixtureError(f"fixture {name} failed (exit {r.rc}{', timed out' if r.timed_out else ''}): "
                               f"{(r.lines() or ['no stderr'])[-1][:300]}")
        return r


# ---------------------------------------------------------------------------------------------
# Cases


@dataclass
class Spec:
    id: str
    cls: int
    expect: str
    fn: Callable


CASES: list[Spec] = []


def case(cid: str, cls: int, expect: str):
    def deco(fn):
        assert all(s.id != cid for s in CASES), cid
        CASES.append(Spec(cid, cls, expect, fn))
        return fn
    return deco


class Skip(Exception):
    pass


@dataclass
class Case:
    sweep: Sweep
    spec: Spec
    dir: Path
    runs: list[Run] = field(default_factory=list)
    main: Run | None = None
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _n: int = 0

    # -- commands
    def _cwd(self) -> Path:
        self._n += 1
        cwd = self.dir / f"cwd{self._n}"
        cwd.mkdir(parents=True, exist_ok=True)
        return cwd

    def _env(self, env: dict | None) -> dict:
        e = dict(self.sweep.env)
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        return e

    def start(self, args: list, env: dict | None = None, label: str = "") -> Proc:
        cwd = self._cwd()
        return Proc(self.sweep, self.sweep.argv(args), cwd, self._env(env),
                    self.dir / f"cmd{self._n}", label or f"cmd{self._n}")

    def finish(self, proc: Proc, timeout: float = DEFAULT_TIMEOUT, main: bool = True) -> Run:
        r = proc.wait(timeout)
        self._record(r, proc.cwd, main)
        return r

    def cli(self, args: list, timeout: float = DEFAULT_TIMEOUT, env: dict | None = None,
            main: bool = True, label: str = "") -> Run:
        return self.finish(self.start(args, env, label), timeout, main)

    def _record(self, r: Run, cwd: Path, main: bool) -> None:
        self.runs.append(r)
        if main:
            self.main = r
        if TRACEBACK in r.stderr or TRACEBACK in r.stdout:
            self.fail(f"[{r.label}] Python traceback in its output")
        if r.timed_out:
            self.fail(f"[{r.label}] timed out after {r.wall:.0f} s")
        stray = sorted(p.name for p in cwd.iterdir()) if cwd.is_dir() else []
        if stray:
            self.fail(f"[{r.label}] created {stray[:5]} in its working directory")

    # -- verdicts
    def fail(self, msg: str) -> None:
        self.failures.append(msg)

    def note(self, msg: str) -> None:
        self.notes.append(msg)

    def check(self, cond, msg: str) -> bool:
        if not cond:
            self.fail(msg)
        return bool(cond)

    def expect_error(self, r: Run, mention: tuple[str, ...] = (), quiet_lines: bool = True) -> bool:
        """Exit 2 and exactly one non-empty stderr line starting with ``error: `` (no usage box)."""
        ok = self.check(not r.timed_out and r.rc == 2, f"[{r.label}] exit {r.rc}, expected 2 with one error line")
        lines = r.lines()
        errors = [ln for ln in lines if ln.startswith("error: ")]
        if quiet_lines:
            ok &= self.check(len(lines) == 1, f"[{r.label}] {len(lines)} non-empty stderr lines, expected 1")
        else:
            ok &= self.check(len(errors) == 1, f"[{r.label}] {len(errors)} 'error: ' lines, expected 1")
        ok &= self.check(bool(lines) and (lines[0] if quiet_lines else (errors or [""])[0]).startswith("error: "),
                         f"[{r.label}] stderr does not start with 'error: '")
        ok &= self.check("Usage:" not in r.stderr and "╭" not in r.stderr, f"[{r.label}] usage box on stderr")
        for word in mention:
            ok &= self.check(word.lower() in r.stderr.lower(), f"[{r.label}] error line does not mention {word!r}")
        return ok

    def expect_interrupted(self, r: Run) -> bool:
        return self.check(r.rc == 130, f"[{r.label}] exit {r.rc} after the signal, expected 130")

    def fx(self, name: str):
        return self.sweep.fixture(name)


# -- helpers ----------------------------------------------------------------------------------


def copy_run(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=True)
    return dst


def flip_byte(path: Path, frac: float) -> int:
    size = path.stat().st_size
    off = min(size - 1, int(size * frac))
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0xFF]))
    return off


def steps_in(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir())


def largest_file(folder: Path) -> Path:
    return max((f for f in folder.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)


def wait_for(pred: Callable[[], bool], timeout: float, proc: Proc | None = None,
             interval: float = 0.05) -> bool:
    """True once ``pred()`` holds; False on timeout or when ``proc`` exits first."""
    t_end = time.time() + timeout
    while time.time() < t_end:
        try:
            if pred():
                return True
        except (OSError, ValueError, sqlite3.Error):
            pass
        if proc is not None and proc.poll() is not None:
            try:
                return bool(pred())
            except (OSError, ValueError, sqlite3.Error):
                return False
        time.sleep(interval)
    return False


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def jsonl_rows(path: Path) -> list[dict]:
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            rows.append({"__unparsable__": line})
    return rows


def sqlite_rows(path: Path) -> list[dict]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM results ORDER BY idx")]
    finally:
        con.close()


def sqlite_count(path: Path) -> int:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
    try:
        return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    finally:
        con.close()


def processes_with(substring: str) -> list[tuple[int, str]]:
    """Live processes whose command line holds ``substring`` (what ``pgrep -f`` finds)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            state = next((ln for ln in (d / "status").read_text().splitlines()
                          if ln.startswith("State:")), "")
        except OSError:
            continue
        if substring in cmd and "zombie" not in state:
            found.append((int(d.name), cmd.strip()[:200]))
    return found


NOISY_KEYS = re.compile(r"(second|wall|time|rate|per_minute|compile|train_s|run_dir|model|"
                        r"leaderboard|gtn_run|search_dir|^out$|data_source|plot)")


def numeric_leaves(obj, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if NOISY_KEYS.search(str(k)):
                continue
            out.update(numeric_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(numeric_leaves(v, f"{prefix}[{i}]"))
    elif isinstance(obj, bool) or obj is None:
        out[prefix] = obj  # type: ignore[assignment]
    elif isinstance(obj, (int, float)):
        out[prefix] = float(obj)
    return out


def close(a, b, rtol: float = RTOL, atol: float = ATOL) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return abs(a - b) <= atol + rtol * abs(a)
    return a == b


def compare_summaries(c: Case, ref: Path, got: Path, what: str, rtol: float = RTOL,
                      atol: float = ATOL) -> None:
    if not c.check(got.is_file(), f"{what}: {got} missing"):
        return
    a, b = numeric_leaves(read_json(ref)), numeric_leaves(read_json(got))
    keys = sorted(set(a) | set(b))
    off = [k for k in keys if k not in a or k not in b or not close(a.get(k), b.get(k), rtol, atol)]
    if off:
        shown = ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in off[:4])
        c.fail(f"{what}: summary.json differs from the uninterrupted run's in {len(off)} field(s): {shown}")
    else:
        c.note(f"{what}: {len(keys)} summary fields equal the uninterrupted run's")


def compare_checkpoints(c: Case, ref_run: Path, got_run: Path, what: str, folder: str = "checkpoints") -> None:
    sa, sb = steps_in(ref_run / folder), steps_in(got_run / folder)
    if not c.check(sa and sb and sa[-1] == sb[-1], f"{what}: last {folder} step {sb[-1:] or None}, "
                   f"uninterrupted {sa[-1:] or None}"):
        return
    da, db = ref_run / folder / str(sa[-1]), got_run / folder / str(sb[-1])
    da, db = (da / "default" if (da / "default").is_dir() else da), (db / "default" if (db / "default").is_dir() else db)
    r = subprocess.run([c.sweep.python, "-c", CKPT_DIFF, str(da), str(db), str(RTOL), str(ATOL)],
                       capture_output=True, text=True, env=c.sweep.env, timeout=120)
    try:
        res = json.loads(r.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        c.fail(f"{what}: could not read the checkpoints ({(r.stderr.strip().splitlines() or ['?'])[-1][:200]})")
        return
    if not c.check(res["same_shapes"], f"{what}: checkpoint leaves differ in number or shape {res['leaves']}"):
        return
    if res["leaves_off"]:
        c.fail(f"{what}: {res['leaves_off']} of {res['leaves'][0]} checkpoint leaves differ from the "
               f"uninterrupted run's (max |diff| {res['max_abs']:.3g})")
    else:
        c.note(f"{what}: all {res['leaves'][0]} leaves of checkpoint {sa[-1]} equal within "
               f"rtol {RTOL:g} (max |diff| {res['max_abs']:.3g})")


def compare_meta_train(c: Case, ref: Path, got: Path, what: str) -> None:
    """Same final meta-parameters, best step and rollbacks as the uninterrupted run."""
    if not c.check((got / "summary.json").is_file(), f"{what}: no summary.json"):
        return
    sa, sb = read_json(ref / "summary.json"), read_json(got / "summary.json")
    for k in ("outer_steps", "best_step", "stopped"):
        c.check(sa.get(k) == sb.get(k), f"{what}: {k} {sb.get(k)!r}, uninterrupted {sa.get(k)!r}")
    ra = [(r["step"], r["to"]) for r in sa.get("rollbacks", [])]
    rb = [(r["step"], r["to"]) for r in sb.get("rollbacks", [])]
    c.check(ra == rb, f"{what}: rollbacks {rb}, uninterrupted {ra}")
    for k in ("inner_lr", "inner_momentum"):
        va, vb = sa.get(k) or [], sb.get(k) or []
        diff = max((abs(x - y) for x, y in zip(va, vb)), default=0.0)
        c.check(len(va) == len(vb) and diff <= 1e-4, f"{what}: {k} differs by up to {diff:.3g}")
    for k in ("best_validation_accuracy", "validation_accuracy", "final_meta_loss"):
        a, b = sa.get(k), sb.get(k)
        c.check(a is not None and b is not None and close(float(a), float(b)),
                f"{what}: {k} {b!r}, uninterrupted {a!r}")
    compare_checkpoints(c, ref, got, what)


def compare_search(c: Case, ref: Path, got: Path, what: str) -> None:
    if not c.check((got / "results.sqlite").is_file(), f"{what}: no results.sqlite"):
        return
    ra, rb = sqlite_rows(ref / "results.sqlite"), sqlite_rows(got / "results.sqlite")
    ia, ib = [r["idx"] for r in ra], [r["idx"] for r in rb]
    if not c.check(ia == ib, f"{what}: indices {ib}, uninterrupted {ia}"):
        return
    cols = [k for k in ra[0] if k in ("genotype", "params", "flops") or k.endswith("_score")] if ra else []
    off = []
    for x, y in zip(ra, rb):
        for k in cols:
            a, b = x.get(k), y.get(k)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                if not close(float(a), float(b)):
                    off.append(f"idx {x['idx']} {k}: {b} vs {a}")
            elif a != b:
                off.append(f"idx {x['idx']} {k}: {b!r} vs {a!r}")
    if off:
        c.fail(f"{what}: results.sqlite differs from the uninterrupted search: {'; '.join(off[:3])}")
    else:
        c.note(f"{what}: {len(ra)} results.sqlite rows equal the uninterrupted search's")


# ---------------------------------------------------------------------------------------------
# Fixtures (built once per sweep, when first needed)

MT_TINY = ["meta-train", "--preset", "tiny", "--quiet"]
ROLLBACK = ["--iterations", "12", "--rollback-drop", "0.01", "--eval-every", "2", "--log-every", "2"]
CKPT1 = ["--iterations", "30", "--checkpoint-every", "1"]
RETRAIN_LONG = ["--epochs", "12"]


def _fx_gtn(s: Sweep) -> Path:
    out = s.fixtures_dir / "gtn"
    s.run_fixture("gtn", [*MT_TINY, "--data-dir", s.data, "--out", out])
    return out


def _fx_gtn_cifar(s: Sweep) -> Path:
    out = s.fixtures_dir / "gtn-cifar"
    s.run_fixture("gtn-cifar", [*MT_TINY, "--dataset", "cifar10", "--data-dir", s.data, "--out", out])
    return out


def search_args(s: Sweep, gtn: Path, out: Path, budget: int = 4) -> list:
    return ["search", "--gtn", gtn, "--preset", "tiny", "--proxy", "gtn,params", "--budget", budget,
            "--data-dir", s.data, "--out", out, "--quiet"]


def _fx_search(s: Sweep) -> Path:
    out = s.fixtures_dir / "search"
    s.run_fixture("search", search_args(s, s.fixture("gtn"), out))
    return out


def zc_args(s: Sweep, out: Path) -> list:
    return ["search", "--space", "nb201", "--dataset", "cifar10", "--proxy", "params,flops",
            "--budget", "12", "--preset", "tiny", "--data-dir", s.data, "--out", out, "--quiet"]


def _fx_zc(s: Sweep) -> Path:
    out = s.fixtures_dir / "zc"
    s.run_fixture("zc", zc_args(s, out))
    return out


def retrain_args(s: Sweep, out: Path, extra: tuple = ()) -> list:
    return ["retrain", "--preset", "tiny", "--arch", ARCH, *extra, "--data-dir", s.data,
            "--out", out, "--quiet"]


def _fx_retrain(s: Sweep) -> Path:
    out = s.fixtures_dir / "retrain"
    s.run_fixture("retrain", retrain_args(s, out))
    return out


def _fx_retrain_long(s: Sweep) -> Path:
    out = s.fixtures_dir / "retrain-long"
    s.run_fixture("retrain-long", retrain_args(s, out, tuple(RETRAIN_LONG)))
    return out


def _fx_ref_rollback(s: Sweep) -> Path:
    out = s.fixtures_dir / "ref-rollback"
    s.run_fixture("ref-rollback", [*MT_TINY, *ROLLBACK, "--data-dir", s.data, "--out", out])
    return out


def _fx_ref_ckpt1(s: Sweep) -> Path:
    out = s.fixtures_dir / "ref-ckpt1"
    s.run_fixture("ref-ckpt1", [*MT_TINY, *CKPT1, "--data-dir", s.data, "--out", out])
    return out


def _damaged_data(s: Sweep, name: str, rel: str, damage: Callable[[Path], None]) -> Path:
    """A data dir (fixtures/NAME) holding a copy of DATA/REL, damaged in place by ``damage``."""
    root = s.fixtures_dir / name
    src = s.data / rel
    if not src.is_file():
        raise FixtureError(f"{src} not found")
    dst = root / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    damage(dst)
    return root


def _fx_cifar_flipped(s: Sweep) -> Path:
    """A data dir whose cifar10/cifar10-jpeg.tar.xz has one byte flipped at 97 % of its length."""
    return _damaged_data(s, "data-cifar-flipped", "cifar10/cifar10-jpeg.tar.xz",
                         lambda p: flip_byte(p, 0.97))


def _fx_nb201_half(s: Sweep) -> Path:
    """A data dir whose nb201 table is the first half of the original's bytes."""
    return _damaged_data(s, "data-nb201-half", "nb201/nb201_cifar_accuracy.csv",
                         lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]))


FIXTURES: dict[str, Callable[[Sweep], Path]] = {
    "gtn": _fx_gtn, "gtn-cifar": _fx_gtn_cifar, "search": _fx_search, "zc": _fx_zc,
    "retrain": _fx_retrain, "retrain-long": _fx_retrain_long, "ref-rollback": _fx_ref_rollback,
    "ref-ckpt1": _fx_ref_ckpt1, "cifar-flipped": _fx_cifar_flipped, "nb201-half": _fx_nb201_half,
}


# ---------------------------------------------------------------------------------------------
# 1. Output paths that are special files


def _special(c: Case, kind: str) -> tuple[Path, Path, FifoDrain | None]:
    folder = c.dir / "special"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "out.json"
    if kind == "fifo":
        os.mkfifo(path)
        return folder, path, FifoDrain(path)
    os.symlink("/dev/null", path)
    return folder, path, None


def _special_case(command: str, kind: str):
    def fn(c: Case) -> None:
        s = c.sweep
        folder, path, drain = _special(c, kind)
        try:
            if command == "rank":
                zc = copy_run(c.fx("zc"), c.dir / "zc")
                args = ["rank", zc, "--truth", "nb201", "--data-dir", s.data, "--out", path, "--quiet"]
            elif command == "evaluate":
                gtn = copy_run(c.fx("gtn"), c.dir / "gtn")
                args = ["evaluate", "--gtn", gtn, "--data-dir", s.data, *EVAL_FAST, "--out", path, "--quiet"]
            elif command == "meta-train":
                args = [*MT_TINY, "--data-dir", s.data, "--out", path]
            else:
                args = retrain_args(s, path)
            r = c.cli(args, timeout=240)
        finally:
            if drain is not None:
                drain.close()
        if r.rc == 2:
            c.expect_error(r)
        else:
            c.check(r.rc == 0, f"exit {r.rc}: neither refused (2) nor written in place (0)")
        st = os.lstat(path) if os.path.lexists(path) else None
        if kind == "fifo":
            c.check(st is not None and stat.S_ISFIFO(st.st_mode), "the fifo was replaced or removed")
        else:
            c.check(st is not None and stat.S_ISLNK(st.st_mode) and os.readlink(path) == "/dev/null",
                    "the symlink to /dev/null was replaced or removed")
        others = sorted(p for p in os.listdir(folder) if p != path.name)
        c.check(not others, f"created {others} beside the special file")
        c.check(stat.S_ISCHR(os.stat("/dev/null").st_mode), "/dev/null is no longer a character device!")
        if drain is not None and drain.bytes:
            c.note(f"{drain.bytes} bytes written into the fifo")
    return fn


for _cmd in ("rank", "evaluate", "meta-train", "retrain"):
    for _kind, _what in (("fifo", "a fifo"), ("devnull-link", "a symlink to /dev/null")):
        case(f"1-{_cmd}-out-{_kind}", 1,
             f"`{_cmd} --out` {_what}: refused with one error line (exit 2) or written into it (exit 0); "
             "it is still there and special, nothing (plots/, temp files) appears beside it")(
            _special_case(_cmd, _kind))


# ---------------------------------------------------------------------------------------------
# 2. Two meta-train runs on one --out


@case("2-meta-train-twice-one-out", 2,
      "a second `meta-train` on the --out of a running one is refused with one error line naming "
      "the first (pid, host), exit 2; the first finishes; metrics.jsonl has no duplicate rows")
def c_two_runs(c: Case) -> None:
    s = c.sweep
    out = c.dir / "run"
    # --checkpoint-every 1 keeps the first one busy (and writing) long enough to overlap the second
    args = [*MT_TINY, "--iterations", "40", "--checkpoint-every", "1", "--data-dir", s.data, "--out", out]
    first = c.start(args, label="first")
    started = wait_for(lambda: (out / "config.json").is_file(), 180, first)
    c.check(started and first.poll() is None, "the first run ended or stalled before writing config.json")
    t_second = time.time()
    p2 = c.start(args, label="second")
    wait_for(lambda: False, 10.0, p2, 0.05)  # the second's first 10 s (or all of it)
    overlap = first.poll() is None
    second = c.finish(p2, timeout=240)
    r1 = c.finish(first, timeout=300, main=False)
    c.note(f"the second started {t_second - first.t0:.1f} s after the first; the first ran "
           f"{r1.wall:.1f} s, the second {second.wall:.1f} s")
    c.check(overlap, "inconclusive: the first run ended within 10 s of the second's start")
    c.check(r1.rc == 0, f"the first run exited {r1.rc}")
    if c.expect_error(second):
        c.check(str(first.pid) in second.stderr, f"the error line does not name the first run's pid {first.pid}")
        c.check(socket.gethostname() in second.stderr,
                f"the error line does not name the host {socket.gethostname()!r}")
    if (out / "metrics.jsonl").is_file():
        rows = jsonl_rows(out / "metrics.jsonl")
        keys = [(r.get("step"), tuple(sorted(r))) for r in rows]
        dups = len(keys) - len(set(keys))
        c.check(dups == 0, f"metrics.jsonl has {dups} duplicate rows (same step and fields)")


# ---------------------------------------------------------------------------------------------
# 3. Stopped by --time-budget again and again = uninterrupted


@case("3-time-budget-resume-rollback", 3,
      "`meta-train --iterations 12 --rollback-drop 0.01 --eval-every 2 --log-every 2` stopped by "
      "--time-budget 0.000001 after every step and rerun until finished ends with the uninterrupted "
      "run's meta-parameters (last checkpoint), best step and rollbacks")
def c_time_budget(c: Case) -> None:
    s = c.sweep
    ref = c.fx("ref-rollback")
    out = c.dir / "run"
    args = [*MT_TINY, *ROLLBACK, "--time-budget", "0.000001", "--data-dir", s.data, "--out", out]
    runs = 0
    for _ in range(20):
        r = c.cli(args, timeout=240)
        runs += 1
        if not c.check(r.rc == 0, f"invocation {runs} exited {r.rc}"):
            return
        summary = out / "summary.json"
        if summary.is_file():
            sm = read_json(summary)
            if sm.get("stopped") is None and sm.get("outer_steps") == 12:
                break
    else:
        c.fail("not finished after 20 invocations")
        return
    c.note(f"finished after {runs} invocations")
    compare_meta_train(c, ref, out, "stopped and resumed")


# ---------------------------------------------------------------------------------------------
# 4. Damaged inputs


@case("4-cifar-flipped-datasets", 4,
      "`datasets` on a cifar10-jpeg.tar.xz with one byte flipped at 97 % does not say ok with "
      "fewer than 50000 + 10000 images")
def c_cifar_datasets(c: Case) -> None:
    data = c.fx("cifar-flipped")
    r = c.cli(["datasets", "--data-dir", data, "--json"], timeout=240)
    if r.rc == 2:
        c.expect_error(r)
        return
    if not c.check(r.rc == 0, f"exit {r.rc}"):
        return
    try:
        rows = json.loads(r.stdout)
        row = next(x for x in rows if x.get("dataset") == "cifar10")
    except (json.JSONDecodeError, StopIteration, AttributeError):
        c.fail("no cifar10 row in the --json output")
        return
    status = str(row.get("status"))
    c.note(f"cifar10: {status}")
    m = re.match(r"ok: (\d+) train \+ (\d+) test", status)
    if status.startswith("ok"):
        c.check(m and (int(m.group(1)), int(m.group(2))) == (50000, 10000),
                f"says {status!r} for a damaged archive")


@case("4-cifar-flipped-meta-train", 4,
      "`meta-train --dataset cifar10` on the byte-flipped archive is refused with one error line")
def c_cifar_meta_train(c: Case) -> None:
    data = c.fx("cifar-flipped")
    out = c.dir / "run"
    c.expect_error(c.cli([*MT_TINY, "--dataset", "cifar10", "--data-dir", data, "--out", out], timeout=240))


@case("4-cifar-flipped-evaluate", 4,
      "`evaluate` of a CIFAR-10 GTN with --data-dir the byte-flipped archive is refused with one error line")
def c_cifar_evaluate(c: Case) -> None:
    data = c.fx("cifar-flipped")
    gtn = copy_run(c.fx("gtn-cifar"), c.dir / "gtn")
    c.expect_error(c.cli(["evaluate", "--gtn", gtn, "--data-dir", data, *EVAL_FAST,
                          "--out", c.dir / "eval.json", "--quiet"], timeout=240))
    c.check(not (c.dir / "eval.json").exists(), "eval.json written from the damaged data")


@case("4-nb201-half-rank", 4,
      "`rank --truth nb201` with the table cut in half refuses (one error line) or says how many "
      "architectures lack a truth")
def c_nb201_half(c: Case) -> None:
    s = c.sweep
    data = c.fx("nb201-half")
    zc = copy_run(c.fx("zc"), c.dir / "zc")
    r = c.cli(["rank", zc, "--truth", "nb201", "--data-dir", data, "--out", c.dir / "rank.json"])
    if r.rc == 2:
        c.expect_error(r, quiet_lines=False)
        return
    if not c.check(r.rc == 0, f"exit {r.rc}"):
        return
    text = r.stdout + "\n" + r.stderr
    said = [ln for ln in text.splitlines() if re.search(r"\d", ln) and re.search(
        r"(lack|missing|without|no (ground[ -])?truth|not in the|not found in)", ln, re.I)]
    c.check(said, "exit 0 without saying how many architectures lack a truth")
    if said:
        c.note(f"said: {said[0].strip()[:200]}")
    if (c.dir / "rank.json").is_file():
        got = read_json(c.dir / "rank.json")
        used = {k: v.get("n") for k, v in (got.get("proxies") or {}).items() if isinstance(v, dict)}
        c.note(f"rank.json: {got.get('architectures')} architectures, used per proxy {used}")


@case("4-mnist-truncated-meta-train", 4,
      "`meta-train` on an MNIST folder whose t10k-images file lost its last 1000 bytes is refused")
def c_mnist_truncated(c: Case) -> None:
    src = c.sweep.data / "mnist"
    dst = c.dir / "data" / "mnist"
    shutil.copytree(src, dst)
    f = dst / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:-1000])
    c.expect_error(c.cli([*MT_TINY, "--data-dir", c.dir / "data", "--out", c.dir / "run"], timeout=240))


def _flip_in_step(run: Path, folder: str) -> str:
    step = steps_in(run / folder)[-1]
    f = largest_file(run / folder / str(step))
    off = flip_byte(f, 0.5)
    return f"{f.relative_to(run)} byte {off} of {f.stat().st_size}"


def _refused_on_its_own_merits(c: Case, r) -> None:
    if c.expect_error(r):
        c.check("different config" not in r.stderr, "harness: the copy was refused as another run")


@case("4-orbax-flipped-best-evaluate", 4,
      "`evaluate` of a GTN whose best/ checkpoint has a flipped byte in its largest file is refused")
def c_orbax_best(c: Case) -> None:
    gtn = copy_run(c.fx("gtn"), c.dir / "gtn")
    c.note("flipped " + _flip_in_step(gtn, "best"))
    r = c.cli(["evaluate", "--gtn", gtn, "--data-dir", c.sweep.data, *EVAL_FAST,
               "--out", c.dir / "eval.json", "--quiet"])
    _refused_on_its_own_merits(c, r)


@case("4-orbax-flipped-last-resume", 4,
      "rerunning `meta-train` on a run whose last checkpoint has a flipped byte in its largest file is refused")
def c_orbax_last(c: Case) -> None:
    gtn = copy_run(c.fx("gtn"), c.dir / "gtn")
    c.note("flipped " + _flip_in_step(gtn, "checkpoints"))
    r = c.cli([*MT_TINY, "--data-dir", c.sweep.data, "--out", gtn])
    _refused_on_its_own_merits(c, r)


@case("4-msgpack-flipped-eval-only", 4,
      "`retrain --eval-only` of a run whose model.msgpack has a flipped byte is refused")
def c_msgpack(c: Case) -> None:
    run = copy_run(c.fx("retrain"), c.dir / "retrain")
    off = flip_byte(run / "model.msgpack", 0.5)
    c.note(f"flipped model.msgpack byte {off}")
    c.expect_error(c.cli(["retrain", "--eval-only", "--out", run, "--data-dir", c.sweep.data, "--quiet"]))


@case("4-msgpack-truncated-eval-only", 4,
      "`retrain --eval-only` of a run whose model.msgpack lost its last 100 bytes is refused")
def c_msgpack_trunc(c: Case) -> None:
    run = copy_run(c.fx("retrain"), c.dir / "retrain")
    f = run / "model.msgpack"
    f.write_bytes(f.read_bytes()[:-100])
    c.expect_error(c.cli(["retrain", "--eval-only", "--out", run, "--data-dir", c.sweep.data, "--quiet"]))


@case("4-config-no-learner-width-evaluate", 4,
      "`evaluate` of a GTN whose config.json lacks learner_width is refused, not run at a default width")
def c_no_width(c: Case) -> None:
    gtn = copy_run(c.fx("gtn"), c.dir / "gtn")
    cfg = read_json(gtn / "config.json")
    cfg.pop("learner_width", None)
    (gtn / "config.json").write_text(json.dumps(cfg, indent=2))
    c.expect_error(c.cli(["evaluate", "--gtn", gtn, "--data-dir", c.sweep.data, *EVAL_FAST,
                          "--out", c.dir / "eval.json", "--quiet"]))
    c.check(not (c.dir / "eval.json").exists(), "eval.json written")


# ---------------------------------------------------------------------------------------------
# 5. Invalid values: refused before any work


def _invalid(kind: str, extra: list, cwd_out: bool = False):
    def fn(c: Case) -> None:
        s = c.sweep
        target = c.dir / ("eval.json" if kind == "evaluate" else "out")  # in an existing folder
        out = "" if cwd_out else target
        if kind == "meta-train":
            args = [*MT_TINY, *extra, "--data-dir", s.data, "--out", out]
        elif kind == "evaluate":
            gtn = copy_run(c.fx("gtn"), c.dir / "gtn")
            args = ["evaluate", "--gtn", gtn, "--data-dir", s.data, "--num-seeds", "1", "--no-curve",
                    *extra, "--out", out, "--quiet"]
        elif kind == "search":
            args = ["search", "--gtn", c.fx("gtn"), "--preset", "tiny", "--proxy", "gtn,real,params",
                    "--budget", "2", *extra, "--data-dir", s.data, "--out", out, "--quiet"]
        else:
            args = retrain_args(s, out, tuple(extra))
        c.expect_error(c.cli(args, timeout=240))
        c.check(not target.exists(), "the output was created before the refusal")
        c.note(f"{c.main.wall:.1f} s")
    return fn


INVALID = [
    ("5-evaluate-real-lrs-negative", "evaluate", ["--real-lrs", "-1"]),
    ("5-evaluate-real-momentums-5", "evaluate", ["--real-momentums", "5"]),
    ("5-search-real-momentum-5", "search", ["--real-momentum", "5"]),
    ("5-meta-train-meta-b1-1.5", "meta-train", ["--meta-b1", "1.5"]),
    ("5-meta-train-init-momentum-5-momentum-max-0", "meta-train", ["--init-momentum", "5", "--momentum-max", "0"]),
    ("5-meta-train-seed-negative", "meta-train", ["--seed", "-1"]),
    ("5-meta-train-split-seed-negative", "meta-train", ["--split-seed", "-1"]),
    ("5-search-seed-negative", "search", ["--seed", "-1"]),
    ("5-retrain-seed-negative", "retrain", ["--seed", "-1"]),
    ("5-retrain-split-seed-negative", "retrain", ["--split-seed", "-1"]),
    ("5-meta-train-meta-eps-0", "meta-train", ["--meta-eps", "0"]),
    ("5-meta-train-intermediate-weight-negative", "meta-train", ["--intermediate-weight", "-1"]),
]
for _id, _kind, _extra in INVALID:
    case(_id, 5, f"`{_kind} {' '.join(_extra)}` is refused with one error line (exit 2) before "
         "its output is created")(_invalid(_kind, _extra))
case("5-meta-train-out-empty", 5, "`meta-train --out ''` is refused with one error line; nothing is "
     "written into the working directory")(_invalid("meta-train", [], cwd_out=True))
case("5-evaluate-out-empty", 5, "`evaluate --out ''` is refused with one error line; nothing is "
     "written into the working directory")(_invalid("evaluate", EVAL_FAST[2:], cwd_out=True))


@case("5-eval-every-4-log-every-3", 5,
      "`meta-train --iterations 12 --eval-every 4 --log-every 3` validates at outer steps 4, 8 and 12")
def c_eval_every(c: Case) -> None:
    out = c.dir / "run"
    r = c.cli([*MT_TINY, "--iterations", "12", "--eval-every", "4", "--log-every", "3",
               "--data-dir", c.sweep.data, "--out", out])
    if not c.check(r.rc == 0, f"exit {r.rc}"):
        return
    steps = sorted({row["step"] for row in jsonl_rows(out / "metrics.jsonl") if "val_acc" in row})
    c.check(steps == [4, 8, 12], f"validated at outer steps {steps}, expected [4, 8, 12]")


# ---------------------------------------------------------------------------------------------
# 6. Outputs in a folder that does not exist yet


def _new_dir_case(command: str):
    def fn(c: Case) -> None:
        s = c.sweep
        target = c.dir / "new" / "dir" / ("eval.json" if command == "evaluate" else "rank.json")
        if command == "evaluate":
            gtn = copy_run(c.fx("gtn"), c.dir / "gtn")
            args = ["evaluate", "--gtn", gtn, "--data-dir", s.data, *EVAL_FAST, "--quiet"]
        else:
            gtn = copy_run(c.fx("zc"), c.dir / "zc")
            args = ["rank", gtn, "--truth", "nb201", "--data-dir", s.data, "--quiet"]
        r = c.cli([*args, "--out", target])
        if r.rc == 0:
            ok = target.is_file()
            if ok:
                try:
                    ok = isinstance(read_json(target), dict)
                except json.JSONDecodeError:
                    ok = False
            c.check(ok, f"exit 0 but {target} is not a JSON object")
            return
        if not c.expect_error(r):
            return
        # refused: only fair before the work, i.e. in a fraction of the time the work takes
        ref = c.cli([*args, "--out", c.dir / "existing.json"], main=False, label="same, existing folder")
        c.check(ref.rc == 0, f"the same command into an existing folder exited {ref.rc}")
        c.check(r.wall < 0.5 * ref.wall or r.wall < 3.0,
                f"refused after {r.wall:.1f} s, the whole work takes {ref.wall:.1f} s: not before the work")
    return fn


case("6-evaluate-out-new-dir", 6, "`evaluate --out NEW/DIR/eval.json` writes it (exit 0) or refuses "
     "before the work")(_new_dir_case("evaluate"))
case("6-rank-out-new-dir", 6, "`rank --out NEW/DIR/rank.json` writes it (exit 0) or refuses before "
     "the work")(_new_dir_case("rank"))


@case("6-meta-train-out-new-nested-dir", 6, "`meta-train --out NEW/A/B` creates the folders and finishes (exit 0)")
def c_mt_nested(c: Case) -> None:
    out = c.dir / "new" / "a" / "b"
    r = c.cli([*MT_TINY, "--data-dir", c.sweep.data, "--out", out])
    c.check(r.rc == 0 and (out / "summary.json").is_file(), f"exit {r.rc}, summary.json "
            f"{'written' if (out / 'summary.json').is_file() else 'missing'}")


# ---------------------------------------------------------------------------------------------
# 7. Tracebacks: signals


@case("7-sigint-during-checkpoint-save", 7,
      "Ctrl-C (SIGINT) at random moments of a `meta-train --checkpoint-every 1` run (10 tries, "
      "each resuming the last): exit 130 every time, no traceback; the finished run equals an "
      "uninterrupted one")
def c_sigint_ckpt(c: Case) -> None:
    s = c.sweep
    ref = c.fx("ref-ckpt1")
    iterations = int(CKPT1[CKPT1.index("--iterations") + 1])
    rng = random.Random(40)
    folders: list[Path] = []
    sent, log = 0, []

    def finished(run: Path) -> bool:
        try:
            sm = read_json(run / "summary.json")
        except (OSError, json.JSONDecodeError):
            return False
        return sm.get("stopped") is None and sm.get("outer_steps") == iterations

    for t in range(10):
        if not folders or finished(folders[-1]):  # a run that reached its end: the next try starts another
            folders.append(c.dir / f"run{len(folders) + 1}")
        out = folders[-1]
        args = [*MT_TINY, *CKPT1, "--data-dir", s.data, "--out", out]
        before = (steps_in(out / "checkpoints") or [-1])[-1]
        p = c.start(args, label=f"try {t + 1}")
        moved = wait_for(lambda: (steps_in(out / "checkpoints") or [-1])[-1] > before, 180, p, 0.01)
        if not moved or p.poll() is not None:
            r = c.finish(p, main=False)
            log.append(f"try {t + 1}: exit {r.rc} before a new checkpoint appeared")
            if not c.check(r.rc == 0, f"[try {t + 1}] exit {r.rc} before it was interrupted: {r.first or 'no stderr'}"):
                break
            continue
        time.sleep(rng.uniform(0.0, 0.6))
        at_signal = (steps_in(out / "checkpoints") or [-1])[-1]
        p.signal(signal.SIGINT)
        sent += 1
        r = c.finish(p, timeout=180, main=False)
        after = (steps_in(out / "checkpoints") or [None])[-1]
        log.append(f"try {t + 1} ({out.name}): SIGINT at checkpoint {at_signal} -> exit {r.rc}, checkpoint {after}")
        if r.rc == 0 and at_signal < iterations:
            c.fail(f"[try {t + 1}] SIGINT at checkpoint {at_signal} of {iterations} was ignored: the run "
                   "went on to its end and exited 0")
        elif r.rc != 0 and not c.expect_interrupted(r):
            break
    c.note("; ".join(log))
    c.check(sent >= 5, f"only {sent} signals were sent mid-run (need 5)")
    for out in folders:
        args = [*MT_TINY, *CKPT1, "--data-dir", s.data, "--out", out]
        final = c.cli(args, label=f"rerun {out.name} to the end")
        if c.check(final.rc == 0, f"rerunning {out.name} to the end exited {final.rc}: {final.first}"):
            compare_meta_train(c, ref, out, f"{out.name}, interrupted")


def _sigterm_case(command: str):
    def fn(c: Case) -> None:
        s = c.sweep
        out = c.dir / "run"
        if command == "meta-train":
            ref = c.fx("ref-ckpt1")
            args = [*MT_TINY, *CKPT1, "--data-dir", s.data, "--out", out]
            progressed = lambda: len(steps_in(out / "checkpoints")) >= 1  # noqa: E731
        elif command == "search":
            ref = c.fx("search")
            args = search_args(s, c.fx("gtn"), out)
            progressed = lambda: sqlite_count(out / "results.sqlite") >= 1  # noqa: E731
        else:
            ref = c.fx("retrain-long")
            args = retrain_args(s, out, tuple(RETRAIN_LONG))
            progressed = lambda: any(r.get("kind") == "epoch" for r in jsonl_rows(out / "metrics.jsonl"))  # noqa: E731
        p = c.start(args, label="SIGTERM")
        if not wait_for(progressed, 240, p, 0.02) or p.poll() is not None:
            r = c.finish(p)
            c.fail(f"inconclusive: the run ended (exit {r.rc}) before it could be stopped mid-way")
            return
        time.sleep(0.2)
        p.signal(signal.SIGTERM)
        r = c.finish(p, timeout=180)
        c.expect_interrupted(r)
        again = c.cli(args, label="rerun", main=False)
        if not c.check(again.rc == 0, f"the rerun exited {again.rc}: {again.first}"):
            return
        if command == "meta-train":
            compare_meta_train(c, ref, out, "after SIGTERM")
        elif command == "search":
            compare_search(c, ref, out, "after SIGTERM")
        else:
            compare_summaries(c, ref / "summary.json", out / "summary.json", "after SIGTERM")
    return fn


for _cmd in ("meta-train", "search", "retrain"):
    case(f"7-sigterm-{_cmd}", 7, f"SIGTERM during `{_cmd}`: exit 130, no traceback; the same command "
         "again ends with the uninterrupted run's result")(_sigterm_case(_cmd))


# -- a locked results.sqlite


def _locked_case(command: str, hold: float = 20.0, message: bool = False):
    def fn(c: Case) -> None:
        s = c.sweep
        if command == "search":
            run = copy_run(c.fx("search"), c.dir / "search")
            args = search_args(s, c.fx("gtn"), run)
        else:
            run = copy_run(c.fx("zc"), c.dir / "zc")
            args = ["rank", run, "--truth", "nb201", "--data-dir", s.data, "--out", c.dir / "rank.json", "--quiet"]
        con = sqlite3.connect(str(run / "results.sqlite"), timeout=5, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        t0 = time.time()
        p = c.start(args, label=f"{command} (lock held {hold:g} s)")
        released = None
        while p.poll() is None and time.time() - t0 < hold:
            time.sleep(0.1)
        con.execute("ROLLBACK")
        con.close()
        released = time.time() - t0
        r = c.finish(p, timeout=240)
        c.note(f"lock released after {released:.1f} s; the command took {r.wall:.1f} s")
        if r.rc == 2:
            if c.expect_error(r) and message:
                c.check("new --out" not in r.stderr, "the error line sends the user to a new --out "
                        "directory for a locked database")
        else:
            c.check(r.rc == 0, f"exit {r.rc}: neither one error line (2) nor success (0)")
    return fn


case("7-sqlite-locked-search", 7, "`search` while another process holds BEGIN EXCLUSIVE on its "
     "results.sqlite (20 s): one error line (exit 2) after a wait, or success once it is released")(
    _locked_case("search"))
case("7-sqlite-locked-rank", 7, "`rank` while another process holds BEGIN EXCLUSIVE on the search's "
     "results.sqlite (20 s): one error line (exit 2) after a wait, or success once it is released")(
    _locked_case("rank"))
case("7-sqlite-locked-long-rank", 7, "`rank` while another process holds BEGIN EXCLUSIVE on the "
     "search's results.sqlite for 75 s (longer than a 60 s busy timeout): one error line (exit 2) "
     "after a wait that does not send the user to a new --out directory, or success once it is "
     "released")(_locked_case("rank", hold=75.0, message=True))


# -- odd architecture strings, a bad cache dir


@case("7-retrain-arch-non-ascii-digit", 7, "`retrain --arch` with a non-ASCII digit (²) is refused with one error line")
def c_arch_digit(c: Case) -> None:
    arch = ARCH.replace("~0|+|none", "~²|+|none", 1)
    c.expect_error(c.cli(["retrain", "--preset", "tiny", "--arch", arch, "--data-dir", c.sweep.data,
                          "--out", c.dir / "run", "--quiet"]))
    c.check(not (c.dir / "run").exists(), "the output was created")


@case("7-retrain-arch-over-300-chars", 7, "`retrain --arch` longer than 300 characters (longer than a "
      "file name) is refused with one error line")
def c_arch_long(c: Case) -> None:
    arch = ARCH + "+|none~0|" * 30
    c.expect_error(c.cli(["retrain", "--preset", "tiny", "--arch", arch, "--data-dir", c.sweep.data,
                          "--out", c.dir / "run", "--quiet"]))


@case("7-cache-dir-is-a-file", 7, "GTN_NAS_CACHE_DIR set to a regular file: `meta-train --dataset "
      "cifar10` is refused with one error line and the file is left as it was")
def c_cache_file(c: Case) -> None:
    f = c.dir / "cache-file"
    f.write_text("not a folder\n")
    r = c.cli([*MT_TINY, "--dataset", "cifar10", "--data-dir", c.sweep.data, "--out", c.dir / "run"],
              env={"GTN_NAS_CACHE_DIR": str(f)}, timeout=240)
    c.expect_error(r)
    c.check(f.is_file() and f.read_text() == "not a folder\n", "the file was changed or replaced")


# -- hand-edited run files


def _edited_case(edit: str, command: str):
    def fn(c: Case) -> None:
        s = c.sweep
        if edit in ("best-json-list", "metrics-bad-step", "config-inner-steps-str", "evaluate-json-empty"):
            run = copy_run(c.fx("gtn"), c.dir / "gtn")
            if edit == "best-json-list":
                (run / "best" / "best.json").write_text("[]\n")
            elif edit == "metrics-bad-step":
                lines = (run / "metrics.jsonl").read_text().splitlines()
                lines.insert(len(lines) // 2, json.dumps({"step": "x"}))
                (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
            elif edit == "config-inner-steps-str":
                cfg = read_json(run / "config.json")
                cfg["inner_steps"] = str(cfg["inner_steps"])
                (run / "config.json").write_text(json.dumps(cfg, indent=2))
            else:
                (run / "evaluate.json").write_text("{}\n")
            if command == "evaluate":
                args = ["evaluate", "--gtn", run, "--data-dir", s.data, *EVAL_FAST, "--out",
                        c.dir / "eval.json", "--quiet"]
            elif command == "resume":
                args = [*MT_TINY, "--data-dir", s.data, "--out", run]
            else:
                args = ["show", run, "--quiet"]
        else:
            zc = copy_run(c.fx("zc"), c.dir / "zc")
            data = s.data
            if edit == "sqlite-text-score":
                con = sqlite3.connect(str(zc / "results.sqlite"), isolation_level=None)
                con.execute("UPDATE results SET flops = 'abc' WHERE idx = (SELECT MIN(idx) FROM results)")
                con.close()
            else:  # nb201-non-numeric: a searched architecture's CIFAR-10 cell says n/a
                genotypes = {r["genotype"] for r in sqlite_rows(zc / "results.sqlite")}
                data = c.dir / "data"
                (data / "nb201").mkdir(parents=True)
                src = s.data / "nb201" / "nb201_cifar_accuracy.csv"
                with open(src, newline="") as fi, open(data / "nb201" / src.name, "w", newline="") as fo:
                    reader = csv.reader(fi)
                    writer = csv.writer(fo)
                    header = next(reader)
                    writer.writerow(header)
                    ai, ci = header.index("ArchitectureString"), header.index("CIFAR10TestAccuracy200Epochs")
                    done = False
                    for row in reader:
                        if not done and row[ai] in genotypes:
                            row[ci], done = "n/a", True
                        writer.writerow(row)
                c.check(done, "harness: no searched architecture found in the table")
            args = ["rank", zc, "--truth", "nb201", "--data-dir", data, "--out", c.dir / "rank.json", "--quiet"]
        r = c.cli(args, timeout=240)
        if c.expect_error(r):
            c.check("different config" not in r.stderr, "harness: the copy was refused as another run")
    return fn


for _edit, _cmd, _what in (
        ("best-json-list", "evaluate", "best/best.json is `[]`; `evaluate`"),
        ("best-json-list", "resume", "best/best.json is `[]`; rerun `meta-train`"),
        ("metrics-bad-step", "show", "a metrics.jsonl row `{\"step\": \"x\"}` in the middle; `show`"),
        ("metrics-bad-step", "resume", "a metrics.jsonl row `{\"step\": \"x\"}` in the middle; rerun `meta-train`"),
        ("config-inner-steps-str", "evaluate", "config.json has `\"inner_steps\": \"4\"`; `evaluate`"),
        ("evaluate-json-empty", "show", "evaluate.json is `{}`; `show`"),
        ("sqlite-text-score", "rank", "a text flops score in results.sqlite; `rank`"),
        ("nb201-non-numeric", "rank", "a non-numeric CIFAR-10 cell in a copy of the NB201 table; `rank`")):
    case(f"7-edited-{_edit}-{_cmd}", 7, f"{_what} is refused with one error line")(_edited_case(_edit, _cmd))


# ---------------------------------------------------------------------------------------------
# 8. Orphans


@case("8-search-workers-parent-killed", 8,
      "`search --workers 2 --budget 6` whose parent is killed with SIGKILL: 5 s later no worker runs")
def c_orphans(c: Case) -> None:
    s = c.sweep
    out = c.dir / "search"
    p = c.start(search_args(s, c.fx("gtn"), out, budget=6)[:-1] + ["--workers", "2", "--quiet"],
                label="search --workers 2")
    both = wait_for(lambda: len(processes_with(str(out / "workers"))) >= 2, 180, p, 0.2)
    if not both:
        r = c.finish(p)
        c.fail(f"inconclusive: two workers never ran (exit {r.rc}: {r.first})")
        return
    time.sleep(2.0)
    os.kill(p.pid, signal.SIGKILL)
    r = c.finish(p, timeout=30)
    time.sleep(5.0)
    left = processes_with(str(out))
    c.check(not left, f"{len(left)} process(es) still running 5 s after the parent was killed: "
            f"pids {[pid for pid, _ in left]}")
    for pid, _ in left:  # started (indirectly) by this case: end them by their id
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    c.check(r.rc == -signal.SIGKILL, f"harness: parent exit {r.rc}")


# ---------------------------------------------------------------------------------------------
# 9. Messages


@case("9-eval-only-on-meta-train-run", 9,
      "`retrain --eval-only --out META_TRAIN_RUN` is refused with one error line that does not talk about augment")
def c_eval_only_meta(c: Case) -> None:
    gtn = copy_run(c.fx("gtn"), c.dir / "gtn")
    r = c.cli(["retrain", "--eval-only", "--out", gtn, "--data-dir", c.sweep.data, "--quiet"])
    c.expect_error(r)
    c.check("augment" not in r.stderr.lower(), "the message talks about augment")


@case("9-show-regular-file", 9, "`show FILE` (a regular file) is refused with one error line that does "
      "not say it does not exist")
def c_show_file(c: Case) -> None:
    f = c.dir / "notes.txt"
    f.write_text("hello\n")
    r = c.cli(["show", f, "--quiet"])
    c.expect_error(r)
    c.check("does not exist" not in r.stderr, "says the file does not exist")


@case("9-search-arch-file-1mb-line", 9, "`search --arch-file` with a 1 MB line is refused with one error "
      "line under 1,000 characters")
def c_arch_1mb(c: Case) -> None:
    f = c.dir / "archs.txt"
    f.write_text(("|nor_conv_3x3~0|+" * 70000)[:1_000_000] + "\n")
    r = c.cli(["search", "--space", "nb201", "--dataset", "mnist", "--proxy", "params", "--preset",
               "tiny", "--arch-file", f, "--data-dir", c.sweep.data, "--out", c.dir / "s", "--quiet"])
    c.expect_error(r)
    c.check(max((len(ln) for ln in r.stderr.splitlines()), default=0) < 1000,
            f"a stderr line of {max((len(ln) for ln in r.stderr.splitlines()), default=0)} characters")


@case("9-retrain-arch-120k-chars", 9, "`retrain --arch` of 120,000 characters (about the largest one "
      "argument can be) is refused with one error line under 1,000 characters")
def c_arch_120k(c: Case) -> None:
    arch = ("|nor_conv_3x3~0|+" * 8000)[:120_000]
    r = c.cli(["retrain", "--preset", "tiny", "--arch", arch, "--data-dir", c.sweep.data,
               "--out", c.dir / "run", "--quiet"])
    c.expect_error(r)
    c.check(max((len(ln) for ln in r.stderr.splitlines()), default=0) < 1000,
            f"a stderr line of {max((len(ln) for ln in r.stderr.splitlines()), default=0)} characters")


def _usage_case(extra: list):
    def fn(c: Case) -> None:
        out = c.dir / "run"
        c.expect_error(c.cli(["meta-train", "--preset", "tiny", *extra, "--data-dir", c.sweep.data,
                              "--out", out]))
        c.check(not out.exists(), "the output was created")
    return fn


for _id, _extra in (("9-meta-train-T-abc", ["-T", "abc"]),
                    ("9-meta-train-iterations-1e3", ["--iterations", "1e3"]),
                    ("9-meta-train-unknown-flag", ["--no-such-flag"])):
    case(_id, 9, f"`meta-train {' '.join(_extra)}` prints one `error:` line (exit 2), not a usage box")(
        _usage_case(_extra))


def _blame_case(extra: list, names: tuple[str, ...]):
    def fn(c: Case) -> None:
        out = c.dir / "run"
        r = c.cli([*MT_TINY, *extra, "--data-dir", c.sweep.data, "--out", out])
        if c.expect_error(r):
            c.check(any(n in r.stderr for n in names), f"the error line does not name {names[0]}")
            c.check("--meta-lr" not in r.stderr, "the error line blames --meta-lr")
    return fn


case("9-meta-train-init-lr-negative-blame", 9, "`meta-train --init-lr -1` is refused with one error "
     "line that names --init-lr, not --meta-lr")(_blame_case(["--init-lr", "-1"], ("--init-lr", "init_lr")))
case("9-meta-train-meta-b2-1.5-blame", 9, "`meta-train --meta-b2 1.5` is refused with one error line "
     "that names --meta-b2, not --meta-lr")(_blame_case(["--meta-b2", "1.5"], ("--meta-b2", "meta_b2")))


# ---------------------------------------------------------------------------------------------
# 10. What tiny costs


@case("10-micro-tiny-preset-time", 10,
      "`meta-train --preset tiny --learner micro --out X` (no other option, an empty XLA cache) "
      "finishes within 240 s")
def c_micro(c: Case) -> None:
    cache = c.dir / "xla-cache-fresh"
    cache.mkdir(parents=True)
    r = c.cli(["meta-train", "--preset", "tiny", "--learner", "micro", "--out", c.dir / "run"],
              timeout=240, env={"GTN_NAS_XLA_CACHE": str(cache)})
    c.note(f"{r.wall:.1f} s{' (killed at the limit)' if r.timed_out else ''}")
    c.check(r.rc == 0, f"exit {r.rc}")


# ---------------------------------------------------------------------------------------------
# Cases that need a setup this sweep does not make


@case("7-disk-full", 7, "evaluate/meta-train with --out on a full filesystem: one error line, exit 2 "
      "(set FAULT_SWEEP_FULL_FS to a folder on a nearly full filesystem to run it)")
def c_disk_full(c: Case) -> None:
    full = os.environ.get("FAULT_SWEEP_FULL_FS")
    if not full:
        raise Skip("needs a nearly full filesystem (a small tmpfs mounted by root); "
                   "set FAULT_SWEEP_FULL_FS to a folder on one")
    s = c.sweep
    gtn = copy_run(c.fx("gtn"), c.dir / "gtn")
    r = c.cli(["evaluate", "--gtn", gtn, "--data-dir", s.data, *EVAL_FAST, "--out",
               Path(full) / "fault-sweep-eval.json", "--quiet"], label="evaluate")
    c.expect_error(r)
    r = c.cli([*MT_TINY, "--data-dir", s.data, "--out", Path(full) / "fault-sweep-run"], label="meta-train")
    c.expect_error(r)


# ---------------------------------------------------------------------------------------------
# Driver


def _display(argv: list[str], s: Sweep) -> str:
    args = argv[3:] if len(argv) > 3 and argv[1] == "-c" else argv
    text = "gtn-nas " + shlex.join(args)
    text = text.replace(str(s.cases_dir), "CASE").replace(str(s.fixtures_dir), "FIX")
    text = text.replace(str(s.out), "OUT").replace(str(s.data), "DATA")
    return text if len(text) <= 240 else text[:200] + f"... ({len(text)} chars)"


def run_case(s: Sweep, spec: Spec) -> dict:
    folder = s.cases_dir / spec.id
    folder.mkdir(parents=True, exist_ok=True)
    c = Case(s, spec, folder)
    t0 = time.time()
    verdict = None
    try:
        spec.fn(c)
    except Skip as e:
        verdict = "skip"
        c.note(str(e))
    except FixtureError as e:
        c.fail(f"harness: {e}")
    except Exception as e:  # a harness bug: never a pass
        c.fail(f"harness error: {type(e).__name__}: {e}")
        (folder / "harness-error.txt").write_text(traceback.format_exc())
    if verdict is None:
        verdict = "pass" if not c.failures else "fail"
    main = c.main
    return {
        "id": spec.id, "class": spec.cls, "class_name": CLASSES[spec.cls], "expectation": spec.expect,
        "command": _display(main.argv, s) if main else "",
        "exit_code": (None if main.timed_out else main.rc) if main else None,
        "verdict": verdict,
        "stderr_first_line": main.first if main else "",
        "why": c.failures, "notes": c.notes, "seconds": round(time.time() - t0, 1),
        "commands": [{"label": r.label, "command": _display(r.argv, s), "exit_code": r.rc,
                      "timed_out": r.timed_out, "seconds": round(r.wall, 1),
                      "stderr_head": r.lines()[:3], "stderr_tail": r.lines()[-3:]} for r in c.runs],
    }


def _md(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return text.replace("|", "\\|")


def write_reports(s: Sweep, results: list[dict], wall: float, head: str) -> dict:
    counts: dict[str, dict[str, int]] = {}
    for r in results:
        k = f"{r['class']}. {r['class_name']}"
        counts.setdefault(k, {"pass": 0, "fail": 0, "skip": 0})[r["verdict"]] += 1
    counts = dict(sorted(counts.items(), key=lambda kv: int(kv[0].split(".")[0])))
    doc = {"root": str(s.root), "root_head": head, "data_dir": str(s.data), "python": s.python,
           "wall_seconds": round(wall, 1), "counts": counts, "fixtures": s.fixture_log,
           "cases": results}
    (s.out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [f"# gtn-nas fault sweep", "",
             f"Code root `{s.root}` (HEAD {head}), data `{s.data}`, {len(results)} cases in "
             f"{wall / 60:.1f} min. Commands: `gtn-nas` = `python -c \"import sys; sys.path.insert(0, ROOT); "
             "import cli; cli.main()\"`; CASE = the case's folder, FIX = the fixtures, DATA = the data dir.", "",
             "| class | pass | fail | skip |", "|---|---|---|---|"]
    for k, v in counts.items():
        lines.append(f"| {k} | {v['pass']} | {v['fail']} | {v['skip']} |")
    lines += ["", "| id | class | command | expectation | exit | verdict | first stderr line | why (fail) / notes |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results:
        why = "; ".join(r["why"]) if r["why"] else "; ".join(r["notes"])
        lines.append(f"| {r['id']} | {r['class']} | `{_md(r['command'], 200)}` | {_md(r['expectation'], 300)} | "
                     f"{r['exit_code']} | **{r['verdict']}** | {_md(r['stderr_first_line'], 200)} | {_md(why, 400)} |")
    (s.out / "results.md").write_text("\n".join(lines) + "\n")
    return counts


def prepare_out(out: Path) -> None:
    if out.exists():
        if any(out.iterdir()) and not (out / MARKER).exists():
            sys.exit(f"error: {out} is not empty and was not made by this sweep; give another --out")
        for p in out.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by benchmarks/fault_sweep.py; wiped by its next run\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(REPO), help="code root under test (holds cli.py and gtn_nas/)")
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"),
                    help="folder holding mnist/, cifar10/, nb201/ (default ../shared/data beside the repository)")
    ap.add_argument("--out", default=str(REPO / "runs" / "fault-sweep"), help="working folder (wiped)")
    ap.add_argument("--only", default=None, help="run only the cases whose id contains this "
                    "substring (comma-separated: any of them)")
    ap.add_argument("--jobs", type=int, default=1, help="cases run at once")
    ap.add_argument("--python", default=None, help="interpreter with jax, flax, optax, orbax, typer, "
                    "rich (default: .venv/bin/python of --root, else of this repository, else this one)")
    ap.add_argument("--list", action="store_true", help="list the case ids and exit")
    args = ap.parse_args()
    if args.list:
        for spec in CASES:
            print(f"{spec.id:50s} {spec.expect}")
        return 0
    if args.python is None:
        for cand in (Path(args.root) / ".venv/bin/python", REPO / ".venv/bin/python"):
            if cand.exists():
                args.python = str(cand)
                break
        else:
            args.python = sys.executable
    root = Path(args.root).resolve()
    if not (root / "cli.py").is_file() or not (root / "gtn_nas").is_dir():
        sys.exit(f"error: {root} is not a gtn-nas code root (no cli.py and gtn_nas/)")
    wanted = [w for w in (args.only or "").split(",") if w]
    specs = [sp for sp in CASES if not wanted or any(w in sp.id for w in wanted)]
    if not specs:
        sys.exit(f"error: no case id contains {args.only!r} (see --list)")
    prepare_out(Path(args.out).resolve())
    s = Sweep(args)
    # The tested code, not an installed copy, must be what the children import.
    probe = subprocess.run([s.python, "-c", f"import sys; sys.path.insert(0, {str(root)!r}); "
                            "import gtn_nas, cli; print(gtn_nas.__file__); print(cli.__file__)"],
                           capture_output=True, text=True, env=s.env, cwd=s.out, timeout=120)
    imported = probe.stdout.split()
    if probe.returncode != 0 or not all(Path(p).resolve().is_relative_to(root) for p in imported[:2]):
        sys.exit(f"error: the children would not import the code in {root}: {probe.stdout or probe.stderr}")
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    head += " + uncommitted changes" if dirty else ""
    print(f"fault sweep of {root} (HEAD {head}); imports {imported[0]}; {len(specs)} cases; out {s.out}",
          flush=True)
    t0 = time.time()
    results: dict[str, dict] = {}
    done = 0
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {pool.submit(run_case, s, sp): sp for sp in specs}
            for fut in concurrent.futures.as_completed(futures):
                r = fut.result()
                results[r["id"]] = r
                done += 1
                why = f"  <- {r['why'][0][:160]}" if r["why"] else ""
                print(f"[{done:3d}/{len(specs)}] {r['verdict'].upper():4s} {r['id']} "
                      f"({r['seconds']:.0f} s, {time.time() - t0:.0f} s in){why}", flush=True)
    except KeyboardInterrupt:
        print("interrupted: ending the commands this sweep started", file=sys.stderr)
        s.kill_all()
        raise
    finally:
        s.kill_all()
    ordered = [results[sp.id] for sp in specs if sp.id in results]
    wall = time.time() - t0
    counts = write_reports(s, ordered, wall, head)
    print(f"\n{'class':44s} pass fail skip")
    for k, v in counts.items():
        print(f"{k:44s} {v['pass']:4d} {v['fail']:4d} {v['skip']:4d}")
    total = {x: sum(v[x] for v in counts.values()) for x in ("pass", "fail", "skip")}
    print(f"{'all':44s} {total['pass']:4d} {total['fail']:4d} {total['skip']:4d}")
    print(f"wall {wall / 60:.1f} min; {s.out / 'results.md'}, {s.out / 'results.json'}")
    return 1 if total["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
