"""Every file gtn-nas writes or reads back: atomic writes that never replace what is not a
regular file, results that survive a failed write, run files checked for damage when read.

One mechanism per failure, here rather than at each caller:

- ``write_atomic`` writes a temporary beside the target and renames it over the target, so a
  kill leaves the old file or the new one. It refuses a target that exists and is not a regular
  file (a device, a fifo, a socket): renaming over ``/dev/null`` as root replaces the device node.
  It makes missing parent folders, and turns an OSError into one line naming the file.
- ``save_result`` is for a result that took minutes to compute (evaluate, rank): when its file
  cannot be written (a full disk), the result goes to a fallback file whose path the error gives.
- ``read_json``/``read_jsonl`` check what they read against the shape its reader needs, so a
  hand-edited or damaged run file is one error naming the file and the field, not a traceback
  deep inside the command, and never a silent default.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from gtn_nas.errors import CheckpointError, ConfigError, GtnError


class OutputError(GtnError):
    """A file could not be written (full disk, no permission, a special file in the way)."""


def special_file(path: Path) -> str | None:
    """What ``path`` is when it exists and is neither a regular file nor a folder (following
    links): 'a character device', 'a fifo', ...; None otherwise."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return None  # unreadable: the write itself reports it
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kinds = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a fifo"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "a special file")


def refuse_special(path: Path) -> None:
    kind = special_file(path)
    if kind is not None:
        raise ConfigError(f"{path} is {kind}, not a regular file or folder; gtn-nas neither "
                          "writes to nor replaces special files: give another path")


def _oserror(path: Path, e: OSError, doing: str = "write") -> OutputError:
    return OutputError(f"cannot {doing} {path}: {e.strerror or e}")


def write_atomic(path: Path, data: str | bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file renamed over it."""
    from gtn_nas.io.signals import deferred_interrupts

    path = Path(path)
    refuse_special(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # concurrent writers never share it
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with deferred_interrupts():
            with open(tmp, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise _oserror(path, e) from None


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n"


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, to_json(obj))


def save_result(path: Path, obj: Any) -> None:
    """``write_json``, and when that fails, the result kept in a fallback file that the error
    names, so that minutes of work are not lost to a full disk or a removed folder."""
    try:
        write_json(path, obj)
        return
    except OutputError as e:
        failure = e
    name = f"gtn-nas-{Path(path).stem}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.json"
    for folder in (Path(tempfile.gettempdir()), Path.home()):
        try:
            write_json(folder / name, obj)
        except OutputError:
            continue
        raise OutputError(f"{failure}; the result is kept in {folder / name}") from None
    raise OutputError(f"{failure}; no fallback location was writable either, so the result "
                      "follows on stdout:\n" + to_json(obj).strip()) from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest_arrays(arrays: Iterable[Any]) -> str:
    """sha256 over each array's dtype, shape and bytes: a saved state's fingerprint, checked when
    it is read back (a flipped byte in a checkpoint otherwise loads as other numbers)."""
    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading run files back

NUMBER = (int, float)
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               dict: "an object", list: "a list"}


def _is(value: Any, kind) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    if float in kinds and isinstance(value, int):
        return True
    return isinstance(value, kinds)


def check_fields(obj: Any, schema: Mapping[str, Any], where: str, prefix: str = "") -> None:
    """``obj`` is an object with each key of ``schema`` of its type (see ``_check_value``). A key
    whose type is a tuple holding ``type(None)`` may be null."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where} is damaged: {prefix or 'it'} should be a JSON object, "
                              f"got {type(obj).__name__}")
    for key, kind in schema.items():
        if key not in obj:
            raise CheckpointError(f"{where} is damaged: it lacks '{prefix}{key}'")
        _check_value(obj[key], kind, where, f"{prefix}{key}")


def _check_value(value: Any, kind, where: str, name: str) -> None:
    """``kind``: a type or tuple of types, a nested schema (mapping), or ``[kind]``: a list of
    such values."""
    if isinstance(kind, Mapping):
        check_fields(value, kind, where, f"{name}.")
    elif isinstance(kind, list):
        if not isinstance(value, list):
            raise CheckpointError(f"{where} is damaged: '{name}' should be a list")
        for i, item in enumerate(value):
            _check_value(item, kind[0], where, f"{name}[{i}]")
    elif not _is(value, kind) and not (value is None and type(None) in _kinds(kind)):
        want = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in _kinds(kind)
                           if k is not type(None))
        raise CheckpointError(f"{where} is damaged: '{name}' should be {want}, got "
                              f"{json.dumps(value)[:60]}")


def _kinds(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def read_json(path: Path, schema: Mapping[str, Any] | None = None) -> Any:
    """The JSON in ``path``, checked against ``schema`` (see ``check_fields``) when given."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON ({e})") from None
    except OSError as e:
        raise _oserror(path, e, "read") from None
    if schema is not None:
        check_fields(obj, schema, str(path))
    return obj


STRING_KEYS = frozenset({"kind"})  # the one text field of a metrics row (retrain's train/epoch)


def check_row(row: Any, where: str) -> dict[str, Any]:
    """A metrics row: a JSON object with an integer ``step`` whose other values are numbers,
    booleans or null (``kind`` a string)."""
    if not isinstance(row, dict):
        raise CheckpointError(f"{where} is damaged: a row should be a JSON object")
    step = row.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{where} is damaged: 'step' should be a whole number >= 0, got "
                              f"{json.dumps(step)[:40]}")
    for k, v in row.items():
        ok = isinstance(v, str) if k in STRING_KEYS else (v is None or _is(v, NUMBER + (bool,)))
        if not ok:
            raise CheckpointError(f"{where} is damaged: '{k}' holds {json.dumps(v)[:40]}")
    return row


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics file. Its last line may be cut short by a kill and is skipped; any
    other unreadable or ill-typed line is damage, reported with its line number."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is damaged: it is not text") from None
    except OSError as e:
        raise _oserror(path, e, "read") from None
    rows = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                continue  # the line a kill cut short
            raise CheckpointError(f"{path} line {n} is damaged: not JSON; fix or delete that "
                                  "line") from None
        rows.append(check_row(row, f"{path} line {n}"))
    return rows


__all__ = ["OutputError", "check_fields", "check_row", "digest_arrays", "read_json", "read_jsonl",
           "refuse_special", "save_result", "sha256_file", "special_file", "to_json",
           "write_atomic", "write_json"]
