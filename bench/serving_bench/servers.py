"""The servers being compared: ``recserve up`` (Ray Serve), kserve's ModelServer, a plain FastAPI app.

kserve and the baseline run as children of the bench's own entry point (selected by
``CHILD_ENV``), so they load the same engine and catalog code from the same checkout as the
Serve path they are compared with. All of them bind 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.serving_bench.processes import Child, say, tail, wait_while_alive

CHILD_ENV = "RECSERVE_BENCH_CHILD"
ENTRY = Path(__file__).resolve().parents[1] / "serving.py"
SHARED_STATE = ("mlflow.db", "mlartifacts", "engines", "retrieval")
SHARED_FILES = ("mlflow.db",)
"""Shared entries that are files (SQLite creates one through its link); the others are folders,
made in the shared dir first: a link to a folder that is not there yet would leave the first
``recserve up`` of a fresh state (the one that trains and registers) nowhere to write."""


def private_state(shared: Path, private: Path) -> Path:
    """A state dir that shares the registry, engine cache and index but has its own runs/ and logs.

    ``recserve down`` without a name stops every run recorded in a state dir; other sessions
    use the shared one, so the bench's own ``up`` runs are recorded where nobody else looks.
    """
    private.mkdir(parents=True)
    for name in SHARED_STATE:
        if name not in SHARED_FILES:
            (shared / name).mkdir(parents=True, exist_ok=True)
        (private / name).symlink_to(shared / name)
    return private


def manifest_variant(
    document: dict[str, Any], name: str, *, max_batch_size: int | None = None
) -> dict[str, Any]:
    """A copy of a RecommenderModel document under another name, optionally with another batch size."""
    copy: dict[str, Any] = json.loads(json.dumps(document))
    copy["metadata"]["name"] = name
    if max_batch_size is not None:
        copy["spec"].setdefault("serving", {}).setdefault("batching", {})["maxBatchSize"] = max_batch_size
    return copy


def oip_pairs_body(user_texts: Sequence[str], item_texts: Sequence[str]) -> dict[str, Any]:
    n = len(user_texts)
    return {
        "inputs": [
            {"name": "user_text", "datatype": "BYTES", "shape": [n], "data": list(user_texts)},
            {"name": "item_text", "datatype": "BYTES", "shape": [n], "data": list(item_texts)},
        ]
    }


def oip_ids_body(user_id: int, item_id: int) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "user_id", "datatype": "INT64", "shape": [1], "data": [user_id]},
            {"name": "item_id", "datatype": "INT64", "shape": [1], "data": [item_id]},
        ]
    }


def histogram_stats(exposition: str, name: str) -> tuple[float, float]:
    """(sum, count) of a Prometheus histogram, added over every label set."""
    total = count = 0.0
    for line in exposition.splitlines():
        match = re.match(rf"^{re.escape(name)}_(sum|count)(?:\{{[^}}]*\}})? ([0-9.eE+-]+|NaN)$", line)
        if match:
            value = float(match.group(2))
            if match.group(1) == "sum":
                total += value
            else:
                count += value
    return total, count


def mean_between(before: str, after: str, name: str) -> float:
    """Mean of a histogram's observations made between two scrapes."""
    s0, c0 = histogram_stats(before, name)
    s1, c1 = histogram_stats(after, name)
    return (s1 - s0) / (c1 - c0) if c1 > c0 else math.nan


class ServeRun:
    """``recserve up MANIFEST --port P`` as a subprocess; stopped with ``recserve down NAME``."""

    def __init__(
        self, name: str, manifest: Path, state: Path, port: int, env: dict[str, str], log: Path
    ) -> None:
        self.name = name
        self.state = state
        self.env = env
        self.url = f"http://127.0.0.1:{port}"
        self.recserve = str(Path(sys.executable).with_name("recserve"))
        self.ray_pid = 0
        self.dashboard = ""
        self.stopped = False
        self.child = Child(
            f"recserve up {name}",
            [self.recserve, "up", str(manifest), "--port", str(port), "--state", str(state)],
            log,
            env,
        )

    def start(self, timeout: float) -> None:
        self.child.start()

        def ready() -> bool:
            return any(line.startswith("READY ") for line in tail(self.child.log, 400).splitlines())

        wait_while_alive(ready, timeout, f"recserve up {self.name}", self.child, interval=1.0)
        record = json.loads((self.state / "runs" / f"{self.name}.json").read_text())
        self.ray_pid = int((record.get("ray") or {}).get("pid", 0))
        self.dashboard = str((record.get("ray") or {}).get("dashboard_url", ""))

    def replicas(self) -> int | None:
        """Running ranker replicas (the one version's application), from the Serve REST API
        (None when unknown)."""
        import httpx

        try:
            apps = httpx.get(f"{self.dashboard}/api/serve/applications/", timeout=5).json()
            (deployment,) = [
                app["deployments"]["Ranker"]
                for app in apps["applications"].values()
                if "Ranker" in app.get("deployments", {})
            ]
            return sum(1 for r in deployment["replicas"] if r.get("state") == "RUNNING")
        except Exception:
            return None

    def metrics(self) -> str:
        import httpx

        try:
            return httpx.get(f"{self.url}/metrics", timeout=10).text
        except httpx.HTTPError:
            return ""

    def stop(self) -> None:
        from recserve_operator.embedded.processes import pid_alive, stop_tree

        if self.child.process is None or self.stopped:
            return
        self.stopped = True
        if self.ray_pid == 0:  # stopped before READY: the record may still name the Ray head
            with contextlib.suppress(OSError, ValueError):
                record = json.loads((self.state / "runs" / f"{self.name}.json").read_text())
                if int(record.get("pid", 0)) == self.child.pid:
                    self.ray_pid = int((record.get("ray") or {}).get("pid", 0))
        try:
            done = subprocess.run(
                [self.recserve, "down", self.name, "--state", str(self.state)],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=150,
                start_new_session=True,
            )
            say(
                f"recserve down {self.name}: rc {done.returncode} {done.stdout.strip()} {done.stderr.strip()}"
            )
        except subprocess.TimeoutExpired:
            say(f"recserve down {self.name}: timed out; stopping by pid")
        self.child.stop()
        if self.ray_pid and pid_alive(self.ray_pid):
            stop_tree([self.ray_pid], pgids=[self.ray_pid])
            say(f"ray head {self.ray_pid} was still alive: stopped by pid")


def _input_texts(tensor: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in tensor.as_numpy().reshape(-1)]


def kserve_child(config: dict[str, Any]) -> None:
    """kserve's ModelServer hosting the engine: a ``kserve.Model`` whose predict calls ``engine.score``."""
    sys.argv = sys.argv[:1]  # kserve parses sys.argv at import
    import kserve
    import kserve.model_server as model_server
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    from recserve_serving.engine.runtime import load_engine

    class LoopbackRESTServer(model_server.RESTServer):  # type: ignore[misc]
        """kserve binds its REST server to 0.0.0.0 unconditionally; the bench binds loopback only."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = "127.0.0.1"

    model_server.RESTServer = LoopbackRESTServer

    class EngineModel(kserve.Model):  # type: ignore[misc]
        def __init__(self, name: str, engine_dir: str) -> None:
            super().__init__(name)
            self.engine_dir = engine_dir
            self.engine: Any = None

        def load(self) -> bool:
            self.engine = load_engine(self.engine_dir)
            self.engine.score(["likes: warm"], ["up"])
            self.ready = True
            return True

        def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
            inputs = {tensor.name: tensor for tensor in payload.inputs}
            scores = self.engine.score(_input_texts(inputs["user_text"]), _input_texts(inputs["item_text"]))
            output = InferOutput("score", [len(scores)], "FP32", [float(s) for s in scores])
            return InferResponse(payload.id or "", self.name, [output])

    model = EngineModel(config["model"], config["engine_dir"])
    model.load()
    kserve.ModelServer(
        http_port=config["port"], enable_grpc=False, workers=1, enable_latency_logging=False
    ).start([model])


def baseline_child(config: dict[str, Any]) -> None:
    """What a user might write instead: FastAPI + the transformers checkpoint, scoring every candidate."""
    import torch
    import uvicorn
    from fastapi import FastAPI

    from recserve_serving.example_data import load_example
    from recserve_serving.model import load_checkpoint
    from recserve_serving.serve.catalog import Catalog

    torch.set_num_threads(2)
    catalog = Catalog.open(load_example(), config["index_dir"])
    checkpoint = load_checkpoint(Path(config["checkpoint"]))
    model = checkpoint.model.eval()
    max_len = int(config["max_len"])
    batch = int(config["batch"])
    k = int(config["k"])
    limit = config.get("limit")  # quick runs only: a cut catalog
    item_ids = [int(m) for m in catalog.dataset.item_ids]
    item_text = {m: catalog.item_text(m) for m in item_ids}

    @torch.inference_mode()
    def score(user_text: str, candidates: list[int]) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(candidates), batch):
            chunk = candidates[start : start + batch]
            # the checkpoint's own layout: pairs for a cross-shaped model, user prefix + items for a prefix one
            encoded = checkpoint.encode([user_text] * len(chunk), [item_text[m] for m in chunk], max_len)
            scores.extend(model(**encoded).float().tolist())
        return scores

    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/recommend")
    def recommend(body: dict[str, int]) -> dict[str, Any]:
        user_id, k_items = int(body["user_id"]), int(body.get("k", k))
        seen = catalog.seen(user_id)
        candidates = [m for m in item_ids if m not in seen][:limit]
        scores = score(catalog.user_text(user_id, None), candidates)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])[:k_items]
        items = [{"item_id": catalog.item_id(candidates[i]), "score": scores[i]} for i in order]
        return {"user_id": user_id, "items": items}

    score("likes: warm", item_ids[:batch])
    uvicorn.run(app, host="127.0.0.1", port=int(config["port"]), log_level="warning")


CHILDREN = {"kserve": kserve_child, "baseline": baseline_child}


def server_child(kind: str, config: dict[str, Any], log: Path) -> Child:
    """A ``Child`` that re-runs the bench's entry point as the server ``kind`` (not started yet)."""
    env = dict(os.environ, **{CHILD_ENV: json.dumps({"kind": kind, **config})})
    return Child(kind, [sys.executable, str(ENTRY)], log, env)


def run_child(encoded: str) -> None:
    """The body of a child process: the server named in ``CHILD_ENV``, until it is stopped."""
    config = json.loads(encoded)
    CHILDREN[config.pop("kind")](config)
