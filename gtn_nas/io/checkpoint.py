"""Orbax checkpoints of any pytree, keyed by step, with clear errors instead of silent restarts.

Optax states hold NamedTuples; to keep the on-disk format independent of those classes a
checkpoint stores the pytree's leaves as a list and the caller supplies the structure (a
freshly initialised state of the same config) when restoring.

Each saved step also holds the sha256 of its leaves (``DIGEST_FILE``), checked on restore: orbax
reads a flipped byte in an array file back as other numbers without complaint. A save runs to
its end before a Ctrl-C or SIGTERM is acted on (an interrupted orbax save leaves a temporary
folder that the next save trips on; leftovers of a crash are cleaned when a manager opens), and
a save that fails (a full disk) is one error naming the last step that is safe to resume from.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from gtn_nas.errors import CheckpointError, GtnError
from gtn_nas.io.files import digest_arrays, write_atomic
from gtn_nas.io.signals import deferred_interrupts

logging.getLogger("absl").setLevel(logging.CRITICAL)  # orbax's own error lines duplicate ours


def _closed_loop(exc) -> bool:
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


def _quiet_closed_loop_callbacks() -> None:
    """During and after a failed restore or save, tensorstore's pending operations call back into
    orbax's asyncio loop once it is closed, and each prints a RuntimeError traceback (through sys.excepthook from
    its threads, or as an unraisable exception) around our one-line error. Those, and only
    those, are dropped."""
    if getattr(sys.excepthook, "_gtn_quiet", False):
        return
    except_hook, unraisable_hook = sys.excepthook, sys.unraisablehook

    def excepthook(kind, exc, tb):
        if not _closed_loop(exc):
            except_hook(kind, exc, tb)

    def unraisablehook(unraisable):
        if not _closed_loop(unraisable.exc_value):
            unraisable_hook(unraisable)

    excepthook._gtn_quiet = True  # type: ignore[attr-defined]
    sys.excepthook, sys.unraisablehook = excepthook, unraisablehook


class _DropUnretrieved(logging.Filter):
    """asyncio's "Future exception was never retrieved" report of a read that failed alongside a
    failed restore (orbax gathers the first failure; its siblings' errors are never read): the
    restore's one-line error already says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Future exception was never retrieved",
                                               "Task exception was never retrieved"))


_DROP_UNRETRIEVED = _DropUnretrieved()
DIGEST_FILE = "gtn_nas.sha256"  # in each step's folder: digest_arrays of its leaves


def _reason(e: BaseException) -> str:
    """One line for an exception from orbax, tensorstore or the OS: the OS error inside it if
    there is one (orbax wraps a full disk in its own types), else its first line."""
    seen, cause = set(), e
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    text = str(e).splitlines()[0][:120] if str(e) else ""
    for errno_text in ("No space left on device", "Disk quota exceeded", "Read-only file system",
                       "Permission denied"):
        if errno_text in str(e):
            return errno_text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class Checkpointer:
    def __init__(self, directory: str | Path, max_to_keep: int = 2, writer: bool = True):
        """``writer=False`` (a non-main process of a multi-process run) restores but never saves.

        Each process drives its own manager over itself alone: the saved leaves are host copies
        of replicated arrays, so process 0 writes them without a cross-process barrier.
        """
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.writer = writer
        self.directory = Path(directory).resolve()
        me = jax.process_index()
        try:
            if writer:
                self.directory.mkdir(parents=True, exist_ok=True)
            self._manager = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=max_to_keep, create=False, enable_async_checkpointing=False,
                    cleanup_tmp_directories=writer,
                    multiprocessing_options=ocp.options.MultiprocessingOptions(
                        primary_host=me, active_processes={me})),
            )
        except Exception as e:  # noqa: BLE001 - OSError, or orbax's own on an unreadable folder
            raise CheckpointError(f"cannot open the checkpoints in {self.directory} "
                                  f"({_reason(e)})") from None

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, tree: Any) -> None:
        from gtn_nas.core.distributed import to_host

        if not self.writer:
            return
        leaves = [to_host(x) for x in jax.tree_util.tree_leaves(tree)]
        if self._manager.latest_step() == step:
            return  # already saved (e.g. a final save right after a periodic one)
        _quiet_closed_loop_callbacks()  # a failed save leaves the same callbacks as a restore
        try:
            with deferred_interrupts():
                self._manager.save(step, args=self._ocp.args.StandardSave({"leaves": leaves}))
                self._manager.wait_until_finished()
                write_atomic(self.directory / str(step) / DIGEST_FILE, digest_arrays(leaves))
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - a full disk surfaces as many types from orbax
            logging.getLogger("asyncio").addFilter(_DROP_UNRETRIEVED)
            safe = self._safe_step()
            resume = (f"the last complete checkpoint is step {safe}" if safe is not None else
                      "no complete checkpoint is left")
            raise CheckpointError(f"cannot save checkpoint {step} in {self.directory} "
                                  f"({_reason(e)}); {resume}: free space and run the same "
                                  "command again to resume") from None

    def _safe_step(self) -> int | None:
        try:
            self._manager.reload()
            return self._manager.latest_step()
        except Exception:  # noqa: BLE001 - reporting a failure; never mask it
            return None

    def restore(self, step: int, like: Any) -> Any:
        """Restores the checkpoint at ``step`` into the structure of ``like``."""
        leaves, treedef = jax.tree_util.tree_flatten(like)
        target = {"leaves": [np.zeros(np.shape(x), np.asarray(x).dtype) for x in leaves]}
        where = self.directory / str(step)
        _quiet_closed_loop_callbacks()  # before: the callbacks may fire while restore fails
        damaged = ("delete that step's folder to resume from an earlier one, or start a new run "
                   "directory")
        try:
            with deferred_interrupts():
                restored = self._manager.restore(step, args=self._ocp.args.StandardRestore(target))
        except (KeyboardInterrupt, GtnError):
            raise
        except Exception as e:  # orbax raises many types for unreadable data
            logging.getLogger("asyncio").addFilter(_DROP_UNRETRIEVED)  # only after a failure
            raise CheckpointError(f"checkpoint {where} is unreadable ({_reason(e)}); "
                                  f"{damaged}") from None
        got = [np.asarray(a) for a in restored["leaves"]]
        if len(got) != len(leaves) or any(np.shape(a) != np.shape(b) for a, b in zip(got, leaves)):
            raise CheckpointError(
                f"checkpoint {where} does not match this run's config (different shapes); "
                "use a new --out directory")
        digest = where / DIGEST_FILE
        if digest.is_file():  # checkpoints written before digests existed have none
            try:
                saved = digest.read_text().strip()
            except (OSError, UnicodeDecodeError) as e:
                raise CheckpointError(f"checkpoint {where} is unreadable ({_reason(e)}); "
                                      f"{damaged}") from None
            if saved != digest_arrays(got):
                raise CheckpointError(f"checkpoint {where} is damaged: its numbers differ from "
                                      f"those saved (sha256 mismatch); {damaged}")
        return jax.tree_util.tree_unflatten(treedef, got)

    def close(self) -> None:
        self._manager.close()
