"""Data parallelism over every device of every process, with `jax.sharding`.

One `Mesh` with a single ``data`` axis spans all devices. The train step shards its rays
along that axis (each device draws, marches and renders ``R / n`` of them inside
`jax.shard_map`) while parameters, optimiser state and the occupancy grid stay replicated;
gradients are summed over the axis by the transpose of the replicated input. Image
rendering shards each chunk of rays the same way over the devices of one process.

Several hosts: `initialize` calls `jax.distributed.initialize` from ``--dist.*`` flags or
``SPARSEFIELD_COORDINATOR`` / ``SPARSEFIELD_NUM_PROCESSES`` / ``SPARSEFIELD_PROCESS_ID``
(with none of them set, on a cluster that JAX detects by itself, e.g. SLURM, it is called
without arguments when ``SPARSEFIELD_DISTRIBUTED=1``). Each process then holds only its
share of the training views (`process_share`); `put_ray_data` makes one global array of
them, one slice per device. Only process 0 writes the run folder (`is_writer`); every
process reads checkpoints back.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "data"
"""Name of the mesh axis the rays are sharded along."""


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """Multi-host launch (`jax.distributed.initialize`); unset fields fall back to the
    ``SPARSEFIELD_*`` environment variables, and with none set the run is single-process."""

    coordinator: str | None = None
    """``address:port`` of process 0 (env ``SPARSEFIELD_COORDINATOR``)."""
    num_processes: int | None = None
    """Number of processes, usually one per host (env ``SPARSEFIELD_NUM_PROCESSES``)."""
    process_id: int | None = None
    """This process's rank in ``[0, num_processes)`` (env ``SPARSEFIELD_PROCESS_ID``)."""


def initialize(config: DistributedConfig) -> None:
    """Join the other processes of a multi-host run; a no-op for a single process.

    Must run before anything touches a JAX device. On CPU the collectives go through gloo.
    """
    env = os.environ.get
    coordinator = config.coordinator or env("SPARSEFIELD_COORDINATOR")
    num = config.num_processes or _int(env("SPARSEFIELD_NUM_PROCESSES"))
    pid = config.process_id if config.process_id is not None else _int(env("SPARSEFIELD_PROCESS_ID"))
    auto = env("SPARSEFIELD_DISTRIBUTED") == "1"
    if coordinator is None and not auto:
        return
    if jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num, process_id=pid)


def _int(value: str | None) -> int | None:
    return None if value in (None, "") else int(value)


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (AXIS,))


def local_mesh() -> Mesh:
    """The ``data`` mesh over this process's devices (image rendering needs no other host)."""
    return data_mesh(jax.local_devices())


def is_writer() -> bool:
    """Whether this process writes the run folder (process 0 only)."""
    return jax.process_index() == 0


def replicate(tree, mesh: Mesh):
    """Place a pytree (identical on every process) on every device of ``mesh``."""
    sharding = NamedSharding(mesh, P())

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree_util.tree_map(put, tree)


def to_host(tree):
    """Numpy copy of a pytree of replicated arrays (works when other hosts hold copies too)."""

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_shards[0].data)
        return np.asarray(x)

    return jax.tree_util.tree_map(get, tree)


def process_share(ids: np.ndarray) -> np.ndarray:
    """This process's share of the training views ``ids``: every ``P``-th one starting at
    its rank, cycled so every process holds the same number (uniform ray sampling then
    weights the views as one process would, up to the repeated ones)."""
    ids = np.asarray(ids)
    count, rank = jax.process_count(), jax.process_index()
    per = -(-len(ids) // count)
    mine = ids[rank::count]
    return np.resize(mine, per) if len(mine) else ids[:per]


def put_ray_data(data, mesh: Mesh):
    """Training views on the mesh: replicated for one process; with several, a global
    array with a leading device axis whose slice on each device is its process's views
    (the train step sees which from the leading axis)."""
    if jax.process_count() == 1:
        return replicate(data, mesh)
    sharding = NamedSharding(mesh, P(AXIS))
    n = mesh.devices.size

    def stack(x):
        x = np.asarray(x)
        return jax.make_array_from_callback((n, *x.shape), sharding, lambda index: x[None])

    return jax.tree_util.tree_map(stack, data)
