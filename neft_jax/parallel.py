"""Several devices: data-parallel training and key-parallel Monte Carlo with ``jax.sharding``.

* :func:`data_mesh` — a 1-D :class:`~jax.sharding.Mesh` over all (global) devices,
  axis ``"data"``.
* :func:`data_parallel_jit` — jits a function with its batch arguments split along
  the data axis and everything else replicated; :func:`make_data_parallel_step` is it
  for a ``(state, batch, key)`` train step. Under ``jit`` the program has global semantics,
  so the loss, the gradients and BatchNorm's batch statistics are means over the
  *global* batch: XLA inserts the cross-device reductions (all-reduce), nothing is
  hand-written.
* Monte Carlo: pass ``mesh=`` to :func:`neft_jax.monte_carlo` to split the noise
  keys over devices.
* :func:`maybe_initialize_distributed` — for a user's own multi-host program: start
  ``jax.distributed.initialize`` when a multi-process launch is detected. The harness's
  commands do not call it: each runs on one host's devices; many hosts share a sweep or a
  reproduction as workers on one folder (docs/usage.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"

#: A coordinator given outright (JAX's own variables).
_COORDINATOR_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")
#: What a SLURM job step of several tasks sets (``srun``), all of which JAX's SLURM
#: detection reads; a batch script alone has ``SLURM_JOB_ID`` but is one process.
_SLURM_STEP_ENV = ("SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS")


def _count(environ, name: str) -> int:
    try:
        return int(environ.get(name, "1"))
    except ValueError:
        return 1


def multi_process_launch(environ=os.environ) -> bool:
    """Whether this process is one of several of a launch that ``jax.distributed`` can join:
    a coordinator address given, a SLURM step of several tasks (``srun``), or an Open MPI
    world of several ranks."""
    if any(name in environ for name in _COORDINATOR_ENV):
        return True
    if all(name in environ for name in _SLURM_STEP_ENV) and _count(environ, "SLURM_NTASKS") > 1:
        return True
    return _count(environ, "OMPI_COMM_WORLD_SIZE") > 1


def maybe_initialize_distributed(environ=os.environ) -> bool:
    """Call ``jax.distributed.initialize()`` when :func:`multi_process_launch`; a plain
    ``sbatch`` script (``SLURM_JOB_ID`` without a step of several tasks) is one process and
    is left alone."""
    if not multi_process_launch(environ):
        return False
    jax.distributed.initialize()
    return True


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all devices). Its axis is
    ``Auto`` (JAX ≥ 0.7 makes ``Explicit`` ones by default, which refuse a state on one device
    beside a batch from :func:`shard_batch`): XLA propagates the shardings."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                         devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def mesh_axis(mesh: Mesh, user: str) -> str:
    """The one axis of a 1-D ``mesh`` (any name); a one-line ValueError, naming ``user``,
    for a mesh of several axes."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{user}: mesh must be a jax.sharding.Mesh (e.g. "
                        f"neft_jax.parallel.data_mesh()), got {type(mesh).__name__}")
    if len(mesh.axis_names) != 1:
        raise ValueError(f"{user}: the mesh must be 1-D (one axis to split over), got axes "
                         f"{tuple(mesh.axis_names)} of shape {tuple(mesh.devices.shape)}")
    return mesh.axis_names[0]


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the mesh's ``"data"`` axis (replicated over any
    other), or over the one axis of a 1-D mesh whatever its name."""
    if DATA_AXIS in getattr(mesh, "axis_names", ()):
        return NamedSharding(mesh, P(DATA_AXIS))
    if isinstance(mesh, Mesh) and len(mesh.axis_names) > 1:
        raise ValueError(f"data parallelism: a mesh of several axes needs one named "
                         f"{DATA_AXIS!r} to split the batch over, got {tuple(mesh.axis_names)}")
    return NamedSharding(mesh, P(mesh_axis(mesh, "data parallelism")))


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, replicated(mesh))


def shard_batch(batch, mesh: Mesh):
    """Put a batch pytree on the mesh, split along its leading axis (divisible by mesh size)."""
    size = mesh.size
    for leaf in jax.tree.leaves(batch):
        if leaf.shape[0] % size:
            raise ValueError(f"batch size {leaf.shape[0]} is not divisible by the "
                             f"{size} devices of the mesh")
    return jax.device_put(batch, batch_sharded(mesh))


def data_parallel_jit(fn: Callable, mesh: Mesh, batch_args: tuple[bool, ...],
                      donate_argnums: tuple[int, ...] = ()) -> Callable:
    """Jit ``fn`` over ``mesh``: the arguments flagged in ``batch_args`` are split along
    their leading axis over the data axis, every other argument and every output is
    replicated. The one place where the training shardings are written."""
    shardings = tuple(batch_sharded(mesh) if split else replicated(mesh) for split in batch_args)
    return jax.jit(fn, in_shardings=shardings, out_shardings=replicated(mesh),
                   donate_argnums=donate_argnums)


def make_data_parallel_step(step: Callable, mesh: Mesh, donate: bool = False) -> Callable:
    """Jit ``step(state, batch, key)`` with state replicated and batch split over ``mesh``."""
    return data_parallel_jit(step, mesh, (False, True, False), (0,) if donate else ())


def local_data_mesh(batch_size: int) -> Mesh | None:
    """A data mesh over the local devices when there are several and they divide
    ``batch_size``; else None (one device, nothing to split)."""
    count = jax.local_device_count()
    if count > 1 and batch_size % count == 0:
        return data_mesh(jax.local_devices())
    return None
