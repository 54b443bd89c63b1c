"""Run directories: config.json, metrics.jsonl, summary.json, shared by every long command.

A run directory is created by the first invocation and resumed by the next one with the same
config; a different config in an existing directory is an error, never a silent overwrite. The
command that writes a run directory holds its lock (``hold_lock``) for as long as it runs, so a
second command on the same folder is refused with the first one's pid and host instead of
writing every row twice or reading a checkpoint that is still being written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
from pathlib import Path
from typing import Any, Iterable, Iterator

from gtn_nas.config import load_config, resumable_keys, save_config
from gtn_nas.errors import ConfigError
from gtn_nas.io.files import (OutputError, check_row, read_json, read_jsonl,  # noqa: F401 - the run API
                              refuse_special, save_result, special_file, write_atomic, write_json)


def check_writable(path: str | Path, is_file: bool = False) -> Path:
    """Refuses, before any work, an output that cannot be written: ``path`` (a folder, or with
    ``is_file`` a file) or its nearest existing ancestor is of the wrong kind or not writable,
    or ``path`` is a device, fifo or other special file."""
    if not str(path).strip():
        raise ConfigError("the output path is empty; give a folder or file name")
    path = Path(path)
    refuse_special(path)
    if path.exists() and path.is_dir() == is_file:
        raise ConfigError(f"{path} is a {'folder' if is_file else 'file'}; give "
                          f"{'a file path' if is_file else 'a folder'} to write to")
    folder = path.parent if is_file else path
    ancestor = folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"cannot write {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {path}: {ancestor} is not writable")
    return path


class RunLocked(ConfigError):
    """Another process holds the lock of a run directory."""


def hold_lock(path: Path, what: str, wait: float = 0.0):
    """Takes an exclusive POSIX lock on the file ``path`` for this process's lifetime (closing
    the returned file releases it; so does the process's death, kill -9 included). Refused with
    the holder's pid and host when another process still has it after ``wait`` seconds.
    ``what``: the work it guards, for the message ("meta-train in runs/gtn")."""
    import fcntl
    import time

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+b", buffering=0)  # unbuffered: nothing left to fail at close
    except OSError as e:
        raise OutputError(f"cannot lock {path}: {e.strerror or e}") from None
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
        f.seek(0)
        holder = f.read().decode(errors="replace").strip()[:200] or "another process"
        f.close()
        raise RunLocked(f"{holder} is already running {what}; wait for it to finish (then run "
                        "the same command again to resume), or use another output folder") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(f"gtn-nas (pid {os.getpid()} on {socket.gethostname()})".encode())
    except OSError:
        pass  # the lock holds without its note
    return f


LOCK_FILE = ".lock"


@contextlib.contextmanager
def run_lock(run_dir: str | Path, command: str, enabled: bool = True) -> Iterator[None]:
    """Holds ``run_dir``'s lock while the block runs (``enabled`` False: a process that does not
    write, e.g. all but process 0 of a multi-host run)."""
    if not enabled:
        yield
        return
    f = hold_lock(Path(run_dir) / LOCK_FILE, f"{command} in {run_dir}")
    try:
        yield
    finally:
        f.close()


def open_run_dir(cfg, out: str | Path, ignore: Iterable[str] | None = None) -> tuple[Path, bool]:
    """Creates ``out`` with its config.json, or checks an existing one matches (all but the
    resumable fields, or ``ignore``). Returns (dir, resumed)."""
    ignore = resumable_keys(type(cfg)) if ignore is None else ignore
    run_dir = check_writable(out)
    path = run_dir / "config.json"
    if path.exists():
        old = load_config(type(cfg), path)
        a, b = dataclasses.asdict(old), dataclasses.asdict(cfg)
        diff = [k for k in a if k not in ignore and a[k] != b.get(k)]
        if diff:
            shown = ", ".join(f"{k}: {a[k]!r} -> {b[k]!r}" for k in diff[:4])
            raise ConfigError(f"{run_dir} holds a run with a different config ({shown}); "
                              "use a new --out directory or the same options to resume")
        save_config(cfg, path)  # keep e.g. a raised iteration count
        return run_dir, True
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, path)
    return run_dir, False


class NullLog:
    """The metrics log of a process that does not write (all but process 0 of a multi-host run)."""

    def write(self, rows) -> None:
        pass

    def read(self) -> list[dict[str, Any]]:
        return []


class MetricsLog:
    """Append-only JSON lines; on resume, rows at or past the restored step are dropped so a
    resumed run's log equals an uninterrupted one's."""

    def __init__(self, path: Path, resume_step: int | None = None, key: str = "step"):
        self.path = path
        if path.exists():
            keep = [r for r in read_jsonl(path)
                    if resume_step is not None and r.get(key, -1) < resume_step]
            write_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        from gtn_nas.io.signals import deferred_interrupts

        rows = list(rows)
        if not rows:
            return
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        try:
            with deferred_interrupts(), self.path.open("a") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from None

    def read(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path) if self.path.exists() else []
