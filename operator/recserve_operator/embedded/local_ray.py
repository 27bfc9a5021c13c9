"""A single-node Ray cluster owned by one ``recserve up``, bound to 127.0.0.1.

``ray start --block`` keeps the head in the foreground, so the whole cluster is one process
tree in one process group that we started: stopping it by pid leaves nothing behind and
never touches another Ray on the machine (unlike ``ray stop``, which kills them all).
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from recserve_operator.embedded.processes import free_port, pid_alive, spawn, stop_tree
from recserve_serving.errors import Unavailable
from recserve_serving.offline import stay_offline
from recserve_serving.waiting import WaitTimeout, wait_for

# Ray puts unix sockets under its temp dir; their paths must stay below the 107-byte limit.
_MAX_TEMP_DIR = 48
LOCAL_RAY_ENV = {"RAY_AUTH_MODE": "disabled"}
"""What a local cluster and its clients (``ray.init`` in tests and benchmarks) also need: no
token auth on a cluster bound to 127.0.0.1 and owned by one process."""


@dataclass(frozen=True)
class RayClusterInfo:
    pid: int
    gcs_port: int
    dashboard_url: str
    temp_dir: str
    log_file: str


def _temp_dir(state: Path) -> Path:
    """``RECSERVE_RAY_TMP``, else ``<state>/ray`` when short enough, else a fresh dir in /tmp."""
    preferred = Path(os.environ.get("RECSERVE_RAY_TMP") or state / "ray")
    if len(str(preferred)) <= _MAX_TEMP_DIR:
        preferred.mkdir(parents=True, exist_ok=True)
        return preferred
    return Path(tempfile.mkdtemp(prefix="rs-ray-"))


def ray_environment() -> dict[str, str]:
    env = dict(os.environ)
    stay_offline(env)
    env.update(LOCAL_RAY_ENV)
    # Serve replicas run our code: keep their thread pools at the machine's size.
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


HEAD_START_ATTEMPTS = 3


class HeadExited(Unavailable):
    """``ray start`` exited before its dashboard answered."""


def start_local_ray(state: Path, *, num_cpus: int, timeout: float = 120.0) -> RayClusterInfo:
    """Start the head node and wait until its dashboard (and Serve REST API) answers.

    A head that exits while starting is started again (three tries in all), on fresh ports: on a loaded machine
    one of its own processes can time out waiting for the others (Ray's client server "timed
    out waiting for node info") and take the head down with it, which says nothing about the
    next try. A head that never answers is not retried: its wait already took ``timeout``."""
    for _ in range(HEAD_START_ATTEMPTS - 1):
        try:
            return _start_head(state, num_cpus, timeout)
        except HeadExited:
            continue
    return _start_head(state, num_cpus, timeout)


def _start_head(state: Path, num_cpus: int, timeout: float) -> RayClusterInfo:
    temp_dir = _temp_dir(state)
    log_file = temp_dir / "ray-head.log"
    gcs_port, dashboard_port = free_port(), free_port()
    ray = str(Path(sys.executable).with_name("ray"))
    command = [
        ray, "start", "--head", "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs_port}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        f"--num-cpus={num_cpus}",
        "--object-store-memory=268435456",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]  # fmt: skip
    process = spawn(command, log_file, ray_environment())
    info = RayClusterInfo(
        pid=process.pid,
        gcs_port=gcs_port,
        dashboard_url=f"http://127.0.0.1:{dashboard_port}",
        temp_dir=str(temp_dir),
        log_file=str(log_file),
    )

    def serve_api_up() -> bool:
        if process.poll() is not None:
            return True  # exited: reported just below, without waiting out the timeout
        return httpx.get(f"{info.dashboard_url}/api/serve/applications/", timeout=5).status_code == 200

    try:
        wait_for(serve_api_up, timeout, interval=0.5, message="the local Ray dashboard")
    except WaitTimeout as error:
        stop_local_ray(info)
        raise Unavailable(f"local Ray cluster did not start: {error}; log: {log_file}") from error
    if process.poll() is not None:
        stop_local_ray(info)
        raise HeadExited(
            f"local Ray cluster did not start: ray start exited with code {process.returncode}; log: {log_file}"
        )
    return info


def stop_local_ray(info: RayClusterInfo) -> None:
    stop_tree([info.pid], pgids=[info.pid])


def is_running(info: RayClusterInfo) -> bool:
    return pid_alive(info.pid)


def to_dict(info: RayClusterInfo) -> dict[str, object]:
    return asdict(info)
