"""JAX's own multi-device and multi-process runtime, as gtn-nas uses it.

Meta-training shards its ``num_learners`` fresh learners over a one-axis device mesh
(``learners``); the generator, curriculum and optimiser state are replicated, so the mean over
learners in the meta-loss becomes an all-reduce that XLA inserts. Several hosts join through
``jax.distributed.initialize``; every process runs the same program, and only process 0 writes
logs, pictures, checkpoints and summaries; every process restores the same checkpoint.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gtn_nas.errors import ConfigError

AXIS = "learners"
# Read when the matching option is not given (the names JAX's own launch docs use).
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"${name} must be an integer, got {value!r}") from None


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Joins a multi-process run when one is described (options, else $JAX_* variables).

    Returns True when this process is part of a multi-process run. Without a description it does
    nothing: a single process sees its local devices only.
    """
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else env_int(ENV_PROCESS_ID)
    if coordinator is None and (num_processes or 1) == 1:
        return False
    if coordinator is None or num_processes is None or process_id is None:
        raise ConfigError("a multi-process run needs --coordinator HOST:PORT, --num-processes and "
                          f"--process-id (or ${ENV_COORDINATOR}, ${ENV_NUM_PROCESSES}, "
                          f"${ENV_PROCESS_ID})")
    if not 0 <= process_id < num_processes:
        raise ConfigError(f"--process-id must be in [0, {num_processes}), got {process_id}")
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    # CPU processes exchange collectives through gloo; GPUs use NCCL without being asked.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id)
    except Exception as e:  # connection refused, timeout, address in use, ...
        raise ConfigError(f"could not join the run at {coordinator} as process {process_id} of "
                          f"{num_processes} ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    return True


def is_main() -> bool:
    """Whether this process writes files and draws progress bars."""
    return jax.process_index() == 0


def learner_mesh(devices: int, num_learners: int) -> Mesh | None:
    """The ``learners`` mesh over ``devices`` devices (0: every device of every process).

    None when one device does the work (the plain single-device program).
    """
    available = jax.devices()
    n = len(available) if devices == 0 else devices
    if n > len(available):
        raise ConfigError(f"--devices {n} asked for, but JAX sees {len(available)} "
                          f"({jax.default_backend()}); on CPU set "
                          "XLA_FLAGS=--xla_force_host_platform_device_count=N")
    if n == 1:
        return None
    if num_learners % n:
        raise ConfigError(f"--num-learners {num_learners} must be a multiple of the {n} devices "
                          "it is sharded over")
    return Mesh(np.asarray(available[:n]), (AXIS,))


def shard_learners(x: jax.Array, mesh: Mesh | None) -> jax.Array:
    """Inside a jitted function: split the leading (learner) axis of ``x`` over the mesh."""
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(AXIS)))


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Places every leaf of ``tree`` on all mesh devices, as one global array per leaf.

    Works across processes too: each process supplies the (identical) host value for its own
    devices, which is how a multi-controller program receives replicated inputs.
    """
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec())

    def put(x):
        host = np.asarray(to_host(x))
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree_util.tree_map(put, tree)


def to_host(x: Any) -> Any:
    """A numpy copy of a (possibly multi-process, replicated) array, from this process's devices."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


def check_same_everywhere(value: int, what: str) -> None:
    """Raises on every process when the processes disagree on ``value`` (e.g. the step a resume
    starts from: a run directory that is not on a filesystem all hosts share)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    seen = np.asarray(multihost_utils.process_allgather(np.int32(value))).ravel().tolist()
    if len(set(seen)) > 1:
        raise ConfigError(f"the processes disagree on {what} ({seen}, by process id); the run "
                          "directory must be on a filesystem every host sees")


def any_everywhere(flag: bool) -> bool:
    """True on every process when ``flag`` is true on any: a decision from each host's own clock
    (a time budget) that all of them must take at the same step."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.asarray(multihost_utils.process_allgather(np.int32(bool(flag)))).any())


def describe() -> dict[str, Any]:
    return {"backend": jax.default_backend(), "process_index": jax.process_index(),
            "process_count": jax.process_count(), "local_devices": jax.local_device_count(),
            "devices": jax.device_count()}
