"""Stopping cleanly: SIGTERM as Ctrl-C, writes that an interrupt cannot cut in half, and worker
processes that die with their parent.

Schedulers, ``kill`` and Ray stop a process with SIGTERM; Python's default for it is to die on
the spot, with no checkpoint and a half-written file. Turned into ``KeyboardInterrupt``, it takes
the path Ctrl-C takes: the state is saved and the command exits with 130. A save is then the one
place an interrupt must not land (orbax leaves a ``*.orbax-checkpoint-tmp`` folder that the next
save trips on), so ``deferred_interrupts`` holds one back until the save is done.

An interrupt raised while Python runs a garbage-collection callback (JAX has one) is printed as
"Exception ignored" and lost: the run went on to its end. The handler counts what it received
and raises nothing there, and the long loops call ``raise_if_received_since`` once per step, so
such an interrupt stops them at the next step.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal
import threading
from typing import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


_received = 0  # interrupts the handler below has received in this process


def _raise_interrupt(signum, frame) -> None:
    global _received
    _received += 1
    if frame is not None and _swallowing(frame.f_code):
        return  # raised here it would be printed and dropped; the loop's next check raises it
    raise KeyboardInterrupt


def _swallowing(code) -> bool:
    """Code whose exceptions Python prints as "Exception ignored" and drops: a garbage-collection
    callback (JAX registers one) or a finaliser."""
    return code.co_name == "__del__" or any(getattr(cb, "__code__", None) is code
                                            for cb in gc.callbacks)


def stop_on_signals() -> None:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` in the main thread, and are counted."""
    if threading.current_thread() is threading.main_thread():
        for s in STOP_SIGNALS:
            signal.signal(s, _raise_interrupt)


def received() -> int:
    """How many interrupts the handler has received so far (a mark for the check below)."""
    return _received


def raise_if_received_since(mark: int) -> None:
    """Raises ``KeyboardInterrupt`` if an interrupt arrived after ``mark`` (``received()``) and
    was swallowed on its way (see the module docstring)."""
    if _received != mark:
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Runs the block to its end even if SIGINT or SIGTERM arrives; the interrupt is raised
    after it (a no-op outside the main thread, where no handler can be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if caught:
        handler = previous[caught[0]]
        if callable(handler):
            handler(caught[0], None)  # Python's own SIGINT handler raises KeyboardInterrupt
        elif handler != signal.SIG_IGN:
            raise KeyboardInterrupt


PR_SET_PDEATHSIG = 1  # linux/prctl.h
ENV_PARENT = "GTN_NAS_PARENT_PID"  # set by a parent for the worker processes it starts


def die_with_parent(parent: int | None) -> None:
    """Called first thing in a worker process: the kernel sends it SIGTERM when its parent dies
    (even by SIGKILL), so that no orphan goes on scoring beside a rerun's workers; a parent
    already gone by then stops it at once. (Not a ``preexec_fn``: that runs Python between fork
    and exec in a process with JAX's threads, which can deadlock.) Linux only; elsewhere the
    worker's shard lock still stops a rerun from scoring the same indices."""
    if parent is None:
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # died before the request above took effect
        os.kill(os.getpid(), signal.SIGTERM)


__all__ = ["ENV_PARENT", "deferred_interrupts", "die_with_parent", "raise_if_received_since",
           "received", "stop_on_signals"]
