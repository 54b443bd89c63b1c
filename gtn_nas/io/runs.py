"""Run directories: config.json, metrics.jsonl, summary.json, shared by every long command.

A run directory is created by the first invocation and resumed by the next one with the same
config; a different config in an existing directory is an error, never a silent overwrite.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable

from gtn_nas.config import load_config, resumable_keys, save_config
from gtn_nas.errors import ConfigError
from gtn_nas.io.files import read_json, read_jsonl, write_atomic, write_json  # noqa: F401 - the run API

def check_writable(path: str | Path, is_file: bool = False) -> Path:
    """Refuses, before any work, an output that cannot be written: ``path`` (a folder, or with
    ``is_file`` a file) or its nearest existing ancestor is of the wrong kind or not writable."""
    path = Path(path)
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
            keep = []
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
                if resume_step is not None and row.get(key, -1) < resume_step:
                    keep.append(line)
            write_atomic(path, "".join(l + "\n" for l in keep))

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        with self.path.open("a") as f:
            for r in rows:
                f.write(json.dumps(r, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path) if self.path.exists() else []
