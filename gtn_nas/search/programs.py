"""The compiled programs of a search's proxies, kept for reuse in this process.

One cache for every kind of program. A key is the whole frozen description of what the program
bakes in (``ProxySetup``: sizes, the teacher, step counts, the real-data schedule, normalisation,
the convolution form read from $GTN_NAS_CONV, the signature of the array arguments) plus what
names the program within it (its kind, the proxy, the genotype): two programs that could differ
can never share an entry. Least recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gtn_nas.core.nn.spatial import conv_setting
from gtn_nas.core.teacher import Teacher

MAX_PROGRAMS = 16


@dataclass(frozen=True)
class ProxySetup:
    """Everything a proxy program depends on besides its array arguments' values."""

    space: str
    channels: int
    cells: int
    input_shape: tuple[int, ...]
    num_classes: int
    teacher: Teacher
    steps: int  # gtn proxy: inner steps on the curriculum
    real_steps: int
    real_batch: int
    real_schedule: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    chunk: int  # validation images per eval chunk
    args: tuple  # treedef, shapes and dtypes of the programs' array arguments
    gtn_bn: str = "synthetic"  # gtn proxy: the eval's batch-norm statistics (SearchConfig.gtn_bn)
    conv: str = ""  # filled in by ``with_conv``

    def with_conv(self) -> "ProxySetup":
        return ProxySetup(**{**self.__dict__, "conv": conv_setting()})


def signature(tree) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return (str(treedef),) + tuple((tuple(np.shape(x)), str(jnp.asarray(x).dtype)) for x in leaves)


class ProgramCache:
    def __init__(self, size: int = MAX_PROGRAMS):
        self.size = size
        self._programs: OrderedDict[tuple, Any] = OrderedDict()

    def get(self, key: tuple, build: Callable[[], tuple[Any, float]]) -> tuple[Any, float]:
        """(program, seconds spent compiling it now): cached, or ``build()`` and kept."""
        if key in self._programs:
            self._programs.move_to_end(key)
            return self._programs[key], 0.0
        program, seconds = build()
        self._programs[key] = program
        while len(self._programs) > self.size:
            self._programs.popitem(last=False)
        return program, seconds

    def clear(self) -> None:
        self._programs.clear()

    def __len__(self) -> int:
        return len(self._programs)


PROGRAMS = ProgramCache()  # shared by every Scorer of this process


__all__ = ["MAX_PROGRAMS", "PROGRAMS", "ProgramCache", "ProxySetup", "signature"]
