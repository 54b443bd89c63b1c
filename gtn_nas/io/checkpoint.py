"""Orbax checkpoints of any pytree, keyed by step, with clear errors instead of silent restarts.

Optax states hold NamedTuples; to keep the on-disk format independent of those classes a
checkpoint stores the pytree's leaves as a list and the caller supplies the structure (a
freshly initialised state of the same config) when restoring.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from gtn_nas.errors import CheckpointError

logging.getLogger("absl").setLevel(logging.CRITICAL)  # orbax's own error lines duplicate ours


def _closed_loop(exc) -> bool:
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


def _quiet_closed_loop_callbacks() -> None:
    """During and after a failed restore, tensorstore's pending reads call back into orbax's asyncio loop
    once it is closed, and each prints a RuntimeError traceback (through sys.excepthook from
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
        if writer:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=False, enable_async_checkpointing=False,
                multiprocessing_options=ocp.options.MultiprocessingOptions(
                    primary_host=me, active_processes={me})),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, tree: Any) -> None:
        from gtn_nas.core.distributed import to_host

        if not self.writer:
            return
        leaves = [to_host(x) for x in jax.tree_util.tree_leaves(tree)]
        if self._manager.latest_step() == step:
            return  # already saved (e.g. a final save right after a periodic one)
        self._manager.save(step, args=self._ocp.args.StandardSave({"leaves": leaves}))
        self._manager.wait_until_finished()

    def restore(self, step: int, like: Any) -> Any:
        """Restores the checkpoint at ``step`` into the structure of ``like``."""
        leaves, treedef = jax.tree_util.tree_flatten(like)
        target = {"leaves": [np.zeros(np.shape(x), np.asarray(x).dtype) for x in leaves]}
        where = self.directory / str(step)
        _quiet_closed_loop_callbacks()  # before: the callbacks may fire while restore fails
        try:
            restored = self._manager.restore(step, args=self._ocp.args.StandardRestore(target))
        except Exception as e:  # orbax raises many types for unreadable data
            logging.getLogger("asyncio").addFilter(_DROP_UNRETRIEVED)  # only after a failure
            raise CheckpointError(
                f"checkpoint {where} is unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                "delete that step's folder to resume from an earlier one, or start a new run "
                "directory") from None
        got = restored["leaves"]
        if len(got) != len(leaves) or any(np.shape(a) != np.shape(b) for a, b in zip(got, leaves)):
            raise CheckpointError(
                f"checkpoint {where} does not match this run's config (different shapes); "
                "use a new --out directory")
        return jax.tree_util.tree_unflatten(treedef, [np.asarray(a) for a in got])

    def close(self) -> None:
        self._manager.close()
