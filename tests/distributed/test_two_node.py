"""A real two-node Ray cluster on loopback: two Ray nodes on this machine, each with its own temp dir and resources.

The head (``--num-cpus 1``) and a worker node (``--num-cpus 1``, custom resource ``worker_node``) run an encode and
a tiny sweep between them; then the worker node is killed (SIGKILL to its whole process group) while it holds an
encode batch, and every passage must still be encoded exactly once.

Where the work lands is not left to timing: a test encoder class (installed where the package looks up its actor
class) makes each actor's first batch wait until both nodes' actors hold a batch, and in the kill test the worker
node's actor keeps a batch for ever once shard 0 is written, so the kill always catches work in flight.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from beir_fixture import write_beir
from time_limit import watchdog

from tasb_ray.data import prepare_dataset
from tasb_ray.distributed import ray_data
from tasb_ray.distributed.batch_encoder import ROW, EncoderActor
from tasb_ray.distributed.encode import MANIFEST, encode_corpus, load_embeddings, read_manifest, shard_name
from tasb_ray.distributed.runtime import init_ray

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SHARD_ROWS = 4  # 32 passages -> 8 shards
CORPUS_ROWS = 32
START_TIMEOUT = 120  # a loaded 2-core machine was measured taking 27 s to start a head
ENCODE_TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


@dataclass
class RayNode:
    name: str
    temp: Path
    log: Path
    proc: subprocess.Popen | None = None
    node_id: str = ""


@dataclass
class LoopbackCluster:
    """A head (``ray start --head --block``) and a worker node (``loopback_node.py``), each in its own process group.

    Teardown never runs ``ray stop`` (it stops every Ray process of the machine, other people's too): it kills
    each node's process group, then any process whose command line names one of this cluster's temp dirs (Ray
    workers are started by the raylet and may outlive it for a moment).
    """

    root: Path
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    port: int = field(default_factory=_free_port)
    nodes: dict[str, RayNode] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               # Workers must import this checkout's package, not another install of it.
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               # One explicit token for both nodes and the driver (see test_ray_job.py).
               "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, **extra}
        env.pop("RAY_ADDRESS", None)
        return env

    def _start(self, name: str, cmd: list[str], env: dict[str, str]) -> RayNode:
        node = RayNode(name, self.root / name, self.root / f"{name}.log")
        node.temp.mkdir(parents=True)
        with open(node.log, "w") as log:
            node.proc = subprocess.Popen([*cmd, f"--temp-dir={node.temp}"], env=env, cwd=self.root,
                                         start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        self.nodes[name] = node
        started = wait_for(lambda: node.proc.poll() is not None or "Ray runtime started" in node.log.read_text(),
                           START_TIMEOUT, interval=0.5)
        if not started or node.proc.poll() is not None:
            raise RuntimeError(f"{name} node did not come up:\n{node.log.read_text()[-3000:]}")
        return node

    def start(self) -> None:
        self._start("head", [str(BIN / "ray"), "start", "--head", "--block", f"--port={self.port}", "--num-cpus=1",
                             "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--dashboard-host=127.0.0.1",
                             f"--dashboard-port={_free_port()}", f"--ray-client-server-port={_free_port()}",
                             f"--dashboard-agent-listen-port={_free_port()}", "--object-store-memory=100000000",
                             # Random worker ports: a fixed range would collide with other raylets on this machine.
                             "--min-worker-port=0", "--max-worker-port=0", "--disable-usage-stats"],
                    self.env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
                             # The GCS declares a killed node dead after ~1.5 s instead of ~15 s.
                             RAY_health_check_period_ms="500", RAY_health_check_failure_threshold="3",
                             RAY_health_check_timeout_ms="1000"))
        # Not `ray start --address`: in Ray 2.60 it cannot start a node on loopback (see loopback_node.py).
        self._start("worker", [sys.executable, str(Path(__file__).with_name("loopback_node.py")),
                               f"--address={self.address}", "--num-cpus=1", '--resources={"worker_node": 1}'],
                    self.env())

    def pids_of(self, node: RayNode) -> set[int]:
        """Live processes of ``node``: its process group, and anything naming its temp dir on the command line."""
        import psutil

        pids = set()
        needle = str(node.temp)
        for proc in psutil.process_iter(["cmdline", "status"]):
            with contextlib.suppress(psutil.Error, OSError):
                if proc.info["status"] == psutil.STATUS_ZOMBIE:  # dead already; its parent may never reap it
                    continue
                if (node.proc is not None and os.getpgid(proc.pid) == node.proc.pid) or \
                        any(needle in arg for arg in proc.info["cmdline"] or ()):
                    pids.add(proc.pid)
        return pids - {os.getpid()}

    def kill(self, name: str) -> None:
        node = self.nodes[name]
        for _ in range(3):  # a raylet may start a worker while we kill: look again
            pids = self.pids_of(node)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if node.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.proc.wait(timeout=10)
            wait_for(lambda pids=pids: not (self.pids_of(node) & pids), 10)

    def stop(self) -> None:
        for name in reversed(list(self.nodes)):
            self.kill(name)


@contextlib.contextmanager
def driver_env(cluster: LoopbackCluster):
    """This process as a driver of ``cluster``: its token, no inherited RAY_ADDRESS.

    Ray caches the auth mode and token in C++ at the first ``ray.init`` of a process, and earlier tests in the same
    pytest process may have started local instances with another token: the caches are reset on entry and exit.
    """
    import ray
    from ray._raylet import AuthenticationTokenLoader, Config

    def reset():
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()

    assert not ray.is_initialized(), "another test left Ray initialised"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)
        mp.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
        mp.setenv("RAY_AUTH_MODE", "token")
        mp.setenv("RAY_AUTH_TOKEN", cluster.token)
        reset()
        try:
            yield
        finally:
            if ray.is_initialized():
                ray.shutdown()
    reset()


@pytest.fixture(scope="module")
def cluster(tiny_model):
    import ray

    # Ray's socket paths (<temp>/session_<date>_<pid>/sockets/plasma_store) must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="tr-2n-", dir="/tmp"))
    c = LoopbackCluster(root)
    try:
        c.start()
        with driver_env(c):
            init_ray(c.address)
            assert wait_for(lambda: sum(n["Alive"] for n in ray.nodes()) == 2, START_TIMEOUT, 0.5), ray.nodes()
            for n in ray.nodes():
                if n["Alive"]:
                    c.nodes["worker" if "worker_node" in n["Resources"] else "head"].node_id = n["NodeID"]
            ray.shutdown()
            yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    data = write_beir(tmp_path_factory.mktemp("data") / "tinybeir")
    ds = prepare_dataset(str(data), cache_dir=tmp_path_factory.mktemp("cache"))
    assert len(ds.corpus()) == CORPUS_ROWS
    return ds


def gated_encoder(gate: Path, hold_on: str | None = None, out: Path | None = None):
    """An EncoderActor whose first batch waits until an actor on each of two nodes holds one.

    ``hold_on`` (a node id): a kill of that node must catch work in flight after some shards are written. Rows of
    the first two shards go through as usual, so the driver writes shard 0 whatever actor encodes them; a later
    batch on ``hold_on`` waits for shard 0 in ``out``, then is kept for ever (``held`` marks it); later batches
    elsewhere wait for ``held``, so the other node cannot finish the job before the kill. Each actor runs its
    batches in the order Ray Data hands them out, so the first rows always come through.

    Ray workers cannot import this test module, so it is pickled by value (the class, and ``wait_for``).
    """
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])

    class GatedEncoder(EncoderActor):
        def __call__(self, batch):
            if not getattr(self, "_started", False):
                self._started = True
                (gate / f"got-{self.node}").touch()
                wait_for(lambda: len(list(gate.glob("got-*"))) >= 2, 120)
            if hold_on is not None and batch.column(ROW)[0].as_py() >= 2 * SHARD_ROWS:
                if self.node == hold_on:
                    wait_for(lambda: (out / shard_name(0)).exists(), 120)
                    (gate / "held").touch()
                    while True:  # until the node is killed under this call
                        time.sleep(0.2)
                wait_for(lambda: (gate / "held").exists(), 120)
            return super().__call__(batch)

    return GatedEncoder


def shard_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith("shard-"))


def assert_exactly_once(out: Path, prepared) -> None:
    """The shard files on disk hold every corpus id once, in corpus order, and the manifest lists them all."""
    corpus_ids = list(prepared.corpus()["doc_id"])
    assert shard_files(out) == [shard_name(i) for i in range(CORPUS_ROWS // SHARD_ROWS)]
    ids = [i for name in shard_files(out) for i in pq.read_table(out / name, columns=["doc_id"])["doc_id"].to_pylist()]
    assert ids == corpus_ids and len(set(ids)) == len(ids)
    m = read_manifest(out)
    assert m is not None and m["rows"] == CORPUS_ROWS
    assert [s["file"] for s in m["shards"]] == shard_files(out)
    loaded, _ = load_embeddings(out, verify=True)
    assert list(loaded) == corpus_ids
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def encode(cluster, prepared, tiny_model, out: Path, stats: dict):
    with driver_env(cluster):
        return encode_corpus(prepared, str(tiny_model), out, shard_rows=SHARD_ROWS, block_rows=2, batch_size=4,
                             num_actors=2, address=cluster.address, show_progress=False, stats=stats)


@pytest.fixture(scope="module")
def spread_run(cluster, prepared, tiny_model, tmp_path_factory, request):
    """An encode whose actors are on both nodes (the gate holds every actor until both have a batch)."""
    gate = tmp_path_factory.mktemp("gate")
    out = tmp_path_factory.mktemp("spread") / "emb"
    stats: dict = {}
    with pytest.MonkeyPatch.context() as mp, watchdog(ENCODE_TIMEOUT):
        mp.setattr(ray_data, "EncoderActor", gated_encoder(gate))
        encode(cluster, prepared, tiny_model, out, stats)
    return out, stats, gate


def test_both_nodes_listen_on_loopback_only(cluster):
    import psutil

    listening = []
    for name, node in cluster.nodes.items():
        for pid in cluster.pids_of(node):
            with contextlib.suppress(psutil.Error):
                listening += [(name, c.laddr.ip) for c in psutil.Process(pid).net_connections("inet")
                              if c.status == psutil.CONN_LISTEN]
    assert {name for name, _ in listening} == {"head", "worker"}
    assert {ip for _, ip in listening} <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, listening


def test_encode_runs_on_both_nodes(cluster, spread_run, prepared, tiny_model):
    import numpy as np

    from tasb_ray.models.encoder import BertDot

    out, stats, gate = spread_run
    head, worker = cluster.nodes["head"].node_id, cluster.nodes["worker"].node_id
    assert {p.name for p in gate.glob("got-*")} == {f"got-{head}", f"got-{worker}"}
    # Rows delivered per node, counted by the driver from what each actor returned.
    assert set(stats["rows_by_node"]) == {head, worker}, stats["rows_by_node"]
    assert sum(stats["rows_by_node"].values()) == CORPUS_ROWS
    assert read_manifest(out)["last_run"]["rows_by_node"] == stats["rows_by_node"]
    assert stats["encoded_shards"] == CORPUS_ROWS // SHARD_ROWS
    assert_exactly_once(out, prepared)
    _, vectors = load_embeddings(out)
    want = BertDot(str(tiny_model)).encode(prepared.corpus()["text"].tolist(), "passage", batch_size=8)
    np.testing.assert_allclose(vectors, want, atol=1e-5, rtol=0)


def test_sweep_runs_trials_on_both_nodes(cluster, tiny_model, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "tests" / "experiments"))  # the sweep tests' tiny config
    from sweep_fixture import write_sweep

    from tasb_ray.experiments.config import load_sweep_config
    from tasb_ray.experiments.sweep import run_sweep

    # One CPU per trial and per node: the two trials run at the same time, one on each node. ship_shared sends
    # the shared stages through the object store, as a worker node without the driver's disk would need.
    path = write_sweep(tmp_path, tiny_model, ray={"address": cluster.address, "ship_shared": "always"},
                       pipelines={"enabled": False}, reference=False)  # two trials for two nodes
    with driver_env(cluster), watchdog(300):
        result = run_sweep(load_sweep_config(path), say=lambda s: None)
    trials = result.trials
    assert list(trials["status"]) == ["FINISHED", "FINISHED"], trials.to_string()
    assert set(trials["node"]) == {cluster.nodes["head"].node_id, cluster.nodes["worker"].node_id}
    assert (result.run_dir / "results" / "trials.csv").read_text().count("FINISHED") == 2


def test_killing_the_worker_node_mid_encode_loses_no_passage(cluster, spread_run, prepared, tiny_model, tmp_path,
                                                             record_property):
    head, worker = cluster.nodes["head"].node_id, cluster.nodes["worker"].node_id
    gate = tmp_path / "gate"
    gate.mkdir()
    out = tmp_path / "emb"
    at_kill: dict = {}

    def kill_when_held():
        if wait_for(lambda: (gate / "held").exists(), ENCODE_TIMEOUT):
            at_kill["shards"] = shard_files(out) if out.exists() else []
            at_kill["stamps"] = {n: (out / n).stat().st_mtime_ns for n in at_kill["shards"]}
            cluster.kill("worker")

    killer = threading.Thread(target=kill_when_held, daemon=True)
    killer.start()
    stats: dict = {}
    error = None
    with pytest.MonkeyPatch.context() as mp, watchdog(ENCODE_TIMEOUT + 60):
        mp.setattr(ray_data, "EncoderActor", gated_encoder(gate, hold_on=worker, out=out))
        try:
            encode(cluster, prepared, tiny_model, out, stats)
        except TimeoutError:
            raise
        except Exception as e:  # noqa: BLE001 - the rerun below must then finish the job
            error = e
        killer.join(timeout=30)
    assert "shards" in at_kill, "the worker node's actor never held a batch: nothing was killed"
    assert cluster.nodes["worker"].proc.poll() is not None
    # Killed in the middle: shard 0 was written, the shard of the batch held on the worker node was not.
    assert shard_name(0) in at_kill["shards"] and len(at_kill["shards"]) < CORPUS_ROWS // SHARD_ROWS, at_kill
    before = at_kill["stamps"]
    outcome = "completed" if error is None else f"failed ({type(error).__name__}: {str(error)[:300]})"
    record_property("outcome", outcome)
    print(f"killed the worker node with {len(at_kill['shards'])} shard(s) written; the encode {outcome}")

    if error is None:
        # The job completed: Ray restarted the lost actor on the head and retried its batches there.
        assert stats["encoded_shards"] == CORPUS_ROWS // SHARD_ROWS
        assert sum(stats["rows_by_node"].values()) == CORPUS_ROWS and head in stats["rows_by_node"], stats
    else:
        # The job failed: whole shards only, no manifest; a rerun encodes just the missing ones.
        assert not (out / MANIFEST).exists(), error
        kept = shard_files(out)
        before = {n: (out / n).stat().st_mtime_ns for n in kept}
        digests = {n: (out / n).read_bytes() for n in kept}
        again: dict = {}
        with watchdog(ENCODE_TIMEOUT):
            encode(cluster, prepared, tiny_model, out, again)
        assert (again["encoded_shards"], again["reused_shards"]) == (CORPUS_ROWS // SHARD_ROWS - len(kept), len(kept))
        assert {n: (out / n).read_bytes() for n in kept} == digests
    # Shards written before the kill (or the failure) were not written again.
    assert {n: (out / n).stat().st_mtime_ns for n in before} == before
    assert_exactly_once(out, prepared)
    # Bit for bit what the undisturbed two-node run wrote (padding per text, not per batch).
    spread_out, _, _ = spread_run
    for name in shard_files(out):
        assert (out / name).read_bytes() == (spread_out / name).read_bytes(), name
