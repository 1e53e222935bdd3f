"""Starting or joining Ray: a cluster when an address is given, else a local instance kept on loopback.

Ray 2.60 binds a local instance to the machine's external address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
(read once, when ``ray`` is first imported; ``ray.init(_node_ip_address="127.0.0.1")`` alone does not help), so
this module sets it before importing Ray and, if Ray was imported earlier, flips the constant Ray reads.
Verified on this machine with ``ss -ltnp``: every Ray listener on 127.0.0.1.

Joining a cluster at a loopback address (``127.0.0.1:PORT``, ``localhost:PORT``) needs the same setting: otherwise
``ray.init`` rewrites the loopback host to the machine's external address (``resolve_ip_for_localhost``), where a
loopback-only head does not listen, and the driver waits for a GCS it never reaches.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

import ray
from ray._private import ray_constants

log = logging.getLogger(__name__)

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback_address(address: str) -> bool:
    """True for ``[ray://]127.0.0.1:PORT``, ``localhost:PORT`` and ``[::1]:PORT``."""
    rest = address.split("://", 1)[-1]
    host = rest[1:rest.index("]")] if rest.startswith("[") and "]" in rest else rest.rsplit(":", 1)[0]
    return host in LOOPBACK_HOSTS


def _quiet_env() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray Data prints a progress bar per operator; ours is enough.
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def _force_loopback() -> None:
    """Make a local Ray instance (and the worker processes it spawns) use 127.0.0.1."""
    os.environ[LOOPBACK_ENV] = "0"
    try:  # Ray already imported: the constant was read at import time; set the value it would have read.

        ray_constants.ENABLE_RAY_CLUSTER = False
    except Exception:  # noqa: BLE001 - private API moved: the env var still covers a fresh import
        log.debug("could not set ray_constants.ENABLE_RAY_CLUSTER", exc_info=True)


def init_ray(address: str | None = None, num_cpus: int | None = None, temp_dir: str | os.PathLike | None = None,
             *, object_store_memory: int | None = None, num_gpus: int | None = None) -> bool:
    """Connect to Ray, or start a local instance; a no-op when Ray is already initialised in this process.

    Args:
        address: a cluster to join (``ray://host:10001``, ``host:6379`` or ``auto``); default ``$RAY_ADDRESS``,
            else a new local instance on 127.0.0.1 (no dashboard). A loopback address stays on loopback.
        num_cpus, num_gpus: resources of a new local instance (default: what the machine has).
        temp_dir: Ray's session directory for a new local instance (made absolute; default Ray's /tmp/ray).
        object_store_memory: bytes of shared memory for a new local instance's object store.

    Returns:
        True when this call started or connected Ray (so the caller owns the shutdown), False when it was
        already initialised.
    """
    _quiet_env()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None or is_loopback_address(address):
        _force_loopback()

    if ray.is_initialized():
        return False
    if address is not None:
        log.info("joining Ray at %s", address)
        ray.init(address=address, log_to_driver=True)
        return True
    kwargs: dict = {"include_dashboard": False}
    if num_cpus is not None:
        kwargs["num_cpus"] = int(num_cpus)
    if num_gpus is not None:
        kwargs["num_gpus"] = int(num_gpus)
    if object_store_memory is not None:
        kwargs["object_store_memory"] = int(object_store_memory)
    if temp_dir is not None:
        temp = Path(temp_dir).expanduser().resolve()
        temp.mkdir(parents=True, exist_ok=True)
        kwargs["_temp_dir"] = str(temp)
    # Without an address ray.init starts a new local instance (it would otherwise pick up RAY_ADDRESS).
    ray.init(address="local", **kwargs)
    ip = ray.util.get_node_ip_address()
    if ip not in ("127.0.0.1", "::1"):
        log.warning("local Ray is bound to %s, not loopback (was ray imported with %s set?)", ip, LOOPBACK_ENV)
    return True


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, temp_dir: str | os.PathLike | None = None,
                **kwargs) -> Iterator[bool]:
    """:func:`init_ray` for the block; shuts Ray down afterwards only if this block started it.

    Yields whether this block started (and so will shut down) Ray.
    """
    started = init_ray(address, num_cpus, temp_dir, **kwargs)
    try:
        yield started
    finally:
        if started:
            ray.shutdown()


def cluster_cpus_gpus() -> tuple[float, float]:
    """Total CPUs and GPUs of the connected cluster."""
    res = ray.cluster_resources()
    return float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))


def node_resources() -> list[tuple[float, float]]:
    """(CPUs, GPUs) of each alive node of the connected cluster."""
    return [(float(n["Resources"].get("CPU", 0.0)), float(n["Resources"].get("GPU", 0.0)))
            for n in ray.nodes() if n.get("Alive")]


def node_cpus() -> list[float]:
    """CPUs of each alive node of the connected cluster."""
    return [float(n["Resources"].get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")]
