"""Training over several processes (hosts) with JAX's multi-controller runtime.

Every process runs the same program (``python -m agents.sac_train`` with the same flags plus
its process id): ``initialize`` connects it to the others through ``jax.distributed``, after
which ``jax.devices()`` lists the devices of all processes and the compiled chunk's env axis
is sharded over all of them by XLA's SPMD partitioner (``agents.sac.trainer.env_sharding``).
Nothing here moves data between hosts by hand: the collectives are XLA's (on CPUs through
gloo).

What the host loop needs on top of that:
- inputs built identically on every process (target banks, keys: they depend on the seed
  only) become global arrays replicated over all devices (``replicate``);
- outputs that are not fully addressable by one process (env-sharded state) are gathered
  before they reach NumPy (``to_host``), e.g. for a checkpoint, which process 0 alone writes;
- a restored checkpoint is laid out again like the live state (``put_like``).
With one process every function here is the identity (or a plain ``device_get``).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

ENV_ADDRESS, ENV_COUNT, ENV_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


class DistributedError(RuntimeError):
    """Incomplete or inconsistent multi-process settings, and how to give them."""


def settings(coordinator_address: str | None, num_processes: int | None,
             process_id: int | None) -> dict:
    """``jax.distributed.initialize`` arguments from flags, else the environment variables
    ``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID``; all unset means
    "detect the cluster" (SLURM, Open MPI, Kubernetes/GKE: jax.distributed's own detection)."""
    env = os.environ
    address = coordinator_address or env.get(ENV_ADDRESS) or None
    count = num_processes if num_processes is not None else env.get(ENV_COUNT)
    pid = process_id if process_id is not None else env.get(ENV_ID)
    given = [v is not None for v in (address, count, pid)]
    if any(given) and not all(given):
        raise DistributedError(
            "multi-process training needs all of --coordinator-address HOST:PORT, --num-processes N "
            f"and --process-id I (or {ENV_ADDRESS}, {ENV_COUNT}, {ENV_ID}); give all three, or none "
            "to let jax.distributed detect the cluster (SLURM, Open MPI, Kubernetes)")
    if not any(given):
        return {}
    try:
        count, pid = int(count), int(pid)
    except ValueError as e:
        raise DistributedError(f"process count and id must be integers, got {count!r} and {pid!r}") from e
    if count < 1 or not 0 <= pid < count:
        raise DistributedError(f"process id must be in [0, {count - 1}] for {count} processes, got {pid}")
    return {"coordinator_address": address, "num_processes": count, "process_id": pid}


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join the multi-process run (call before any other JAX computation). On CPUs the
    cross-process collectives use gloo."""
    kwargs = settings(coordinator_address, num_processes, process_id)
    if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)


def is_multiprocess() -> bool:
    return jax.process_count() > 1


_BARRIERS = [0]


def barrier(name: str, timeout_s: float = 3600.0) -> None:
    """Wait until every process gets here (no-op with one process).

    Through the coordinator's key-value service, not a device collective: XLA's CPU (gloo)
    collectives give up when the processes reach their first collective more than 30 s apart,
    which a compilation under load easily is, so the host loop compiles first and meets here
    before it runs a program that talks across processes."""
    if not is_multiprocess():
        return
    from jax._src import distributed as jax_distributed  # noqa: PLC0415 (the runtime's client)
    _BARRIERS[0] += 1
    jax_distributed.global_state.client.wait_at_barrier(f"jaxsynth:{name}:{_BARRIERS[0]}",
                                                        int(timeout_s * 1000))


def compiled(fn, *args):
    """``fn`` (a ``jax.jit`` function) compiled ahead of time for ``args`` and met at a
    ``barrier`` when several processes run it; the plain ``fn`` with one process."""
    if not is_multiprocess():
        return fn
    out = fn.lower(*args).compile()
    barrier("compiled")
    return out


def _global_replicated(x):
    """A host value identical on every process -> one global array replicated on all devices."""
    mesh = Mesh(np.array(jax.devices()), ("all",))
    sharding = NamedSharding(mesh, PartitionSpec())
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = np.asarray(jax.random.key_data(x))
        impl = jax.random.key_impl(x)
        arr = jax.make_array_from_callback(data.shape, sharding, lambda idx: data[idx])
        return jax.random.wrap_key_data(arr, impl=impl)
    data = np.asarray(x)
    return jax.make_array_from_callback(data.shape, sharding, lambda idx: data[idx])


def replicate(tree):
    """Every array leaf of ``tree`` (the same on all processes) as a global replicated array;
    the identity with one process."""
    if not is_multiprocess():
        return tree
    return jax.tree.map(lambda x: _global_replicated(x) if hasattr(x, "dtype") else x, tree)


def _leaf_to_host(x):
    if not isinstance(x, jax.Array):
        return x
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        impl = jax.random.key_impl(x)
        return jax.random.wrap_key_data(_leaf_to_host(jax.random.key_data(x)), impl=impl)
    if x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def to_host(tree):
    """``jax.device_get`` that also works for arrays sharded over other processes (gathered
    to every process; all processes must call it together)."""
    if not is_multiprocess():
        return jax.device_get(tree)
    return jax.tree.map(_leaf_to_host, tree)


def put_like(host_tree, like):
    """Host arrays (e.g. a restored checkpoint, the same on every process) laid out with the
    shardings of ``like`` (the live state); the identity with one process."""
    if not is_multiprocess():
        return host_tree

    def put(x, ref):
        if not isinstance(ref, jax.Array):
            return x
        if jax.dtypes.issubdtype(ref.dtype, jax.dtypes.prng_key):
            data = np.asarray(jax.random.key_data(x))
            arr = jax.make_array_from_callback(data.shape, jax.random.key_data(ref).sharding,
                                               lambda idx: data[idx])
            return jax.random.wrap_key_data(arr, impl=jax.random.key_impl(ref))
        data = np.asarray(x)
        return jax.make_array_from_callback(data.shape, ref.sharding, lambda idx: data[idx])

    return jax.tree.map(put, host_tree, like)
