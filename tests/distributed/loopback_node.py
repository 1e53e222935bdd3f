"""``ray start --address ADDR --block`` for a worker node that stays on 127.0.0.1 (a second node on this machine).

Ray 2.60's ``ray start`` cannot start such a node: with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (Ray's loopback
mode) it refuses any non-head node ("Multi-node Ray clusters are not supported"), and without it it rewrites
``127.0.0.1`` in ``--address`` and ``--node-ip-address`` to the machine's external address
(``services.resolve_ip_for_localhost``), where a loopback head does not listen. This script starts the node the
way ``ray start`` does after its argument checks, and the way Ray's own ``ray.cluster_utils.Cluster.add_node``
adds nodes on one machine: a ``ray._private.node.Node(head=False)`` in loopback mode, then blocks. Kill its
process group to kill the node.

    python loopback_node.py --address 127.0.0.1:PORT --temp-dir DIR [--num-cpus N] [--resources JSON]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# Read by Ray when it is imported: every address of this node is 127.0.0.1.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import ray._private.node
import ray._private.parameter


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", required=True, help="the head's GCS address, 127.0.0.1:PORT")
    p.add_argument("--temp-dir", required=True, help="this node's own temp dir (keep it short: socket paths)")
    p.add_argument("--num-cpus", type=int, default=1)
    p.add_argument("--resources", default="{}", help="custom resources as JSON")
    p.add_argument("--object-store-memory", type=int, default=100_000_000)
    a = p.parse_args(argv)
    params = ray._private.parameter.RayParams(
        gcs_address=a.address, node_ip_address="127.0.0.1", num_cpus=a.num_cpus, num_gpus=0,
        resources=json.loads(a.resources), temp_dir=a.temp_dir, object_store_memory=a.object_store_memory,
        # Ports the OS picks: fixed defaults would collide with the head's on the same machine.
        min_worker_port=0, max_worker_port=0, node_manager_port=0, dashboard_agent_listen_port=None)
    node = ray._private.node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    print(f"Ray runtime started: node {node.node_id} at {node.node_ip_address}, temp dir {a.temp_dir}", flush=True)
    while True:
        dead = node.dead_processes()
        if dead:  # like ray start --block: a node missing its raylet must not look alive
            print(f"Ray processes exited: {[name for name, _ in dead]}", file=sys.stderr, flush=True)
            node.kill_all_processes(check_alive=False, allow_graceful=False)
            return 1
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
