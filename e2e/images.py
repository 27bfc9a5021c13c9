"""The container images, built for real by ``scripts/build-images.sh``, and a podman to run them.

Podman runs with the build script's configuration and storage (in ``e2e/.cache/images``), so a
test sees exactly the images the script built and nothing of the machine's own podman setup.
Every container a test starts has a unique name and is removed by that name when the test ends,
whatever happened; ``--network none`` or loopback-only port forwarding keep it off the network.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from e2e.cluster.process import processes_using
from recserve_serving.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "scripts" / "build-images.sh"


class ImageBuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class Images:
    """The built release images (name → OCI archive) and podman's environment."""

    archives: dict[str, Path]
    env: dict[str, str]

    def named(self, repository: str) -> str:
        """The image whose name has this repository (``.../recserve-serving``)."""
        (name,) = [n for n in self.archives if n.rpartition(":")[0].endswith("/" + repository)]
        return name

    def podman(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args[:3])} ... failed ({proc.returncode}):\n{proc.stderr}"
            )
        return proc

    def leftovers(self, prefix: str) -> list[str]:
        """Containers (running or not) whose name starts with ``prefix``."""
        out = self.podman("ps", "--all", "--format", "{{.Names}}", "--filter", f"name=^{prefix}").stdout
        return out.split()

    @contextlib.contextmanager
    def container_name(self, prefix: str = "recserve-test-") -> Iterator[str]:
        """A unique container name, and the container of that name removed at the end, with
        every host-side process it had (conmon, slirp4netns: their command lines name its id)
        and its network namespace gone."""
        name = f"{prefix}{uuid.uuid4().hex[:10]}"
        try:
            yield name
        finally:
            found = self.podman(
                "ps", "--all", "--no-trunc", "--format", "{{.ID}}", "--filter", f"name=^{name}$", timeout=60
            ).stdout.split()
            sandbox = ""
            if found:
                sandbox = self.podman(
                    "inspect", "--format", "{{.NetworkSettings.SandboxKey}}", name, check=False
                ).stdout.strip()
            self.podman("rm", "--force", "--ignore", "--time", "5", name, timeout=60)
            if found:
                wait_for(
                    lambda: not any(processes_using(cid) for cid in found),
                    30,
                    message=f"the host processes of container {name} to exit",
                )
            if sandbox:
                wait_for(lambda: not Path(sandbox).exists(), 30, message=f"{sandbox} removed")
            for container_id in found:
                # podman 4.3 leaves slirp4netns's API socket behind in its run-time directory.
                (Path(self.env["RECSERVE_PODMAN_RUN"]) / "tmp" / f"{container_id}.net").unlink(
                    missing_ok=True
                )

    def run(
        self, image: str, command: Sequence[str], *, options: Sequence[str] = (), timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``podman run --rm`` to completion, removed even if it times out."""
        with self.container_name() as name:
            try:
                return self.podman(
                    "run", "--rm", "--name", name, *options, image, *command, timeout=timeout, check=False
                )
            except subprocess.TimeoutExpired as error:
                raise AssertionError(f"container {name} ran over {timeout}s: {error.stderr!r}") from None


def ensure_images(log: Path, only: Sequence[str] = ()) -> Images:
    """Build what is missing or stale (a warm run only compares stamps) and return the images:
    every one the script builds, or only those of the Dockerfiles in ``only`` (``make test``
    needs only the serving image, and a cold operator image costs CPU it cannot spare).
    The build script serializes itself with a lock, so a build already running in the
    background (scripts/test.sh starts one) is waited for, not repeated."""
    selection = [arg for dockerfile in only for arg in ("--only", dockerfile)]
    with log.open("w") as out:
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT), *selection], stdout=subprocess.PIPE, stderr=out, text=True
        )
    if proc.returncode != 0:
        raise ImageBuildError(f"{BUILD_SCRIPT} exited {proc.returncode}:\n{log.read_text()[-4000:]}")
    archives = {}
    for line in proc.stdout.splitlines():
        name, sep, archive = line.partition("=")
        if sep and not line.startswith("["):
            archives[name] = Path(archive)
    env_lines = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--env"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    env = {**os.environ, **dict(line.split("=", 1) for line in env_lines)}
    return Images(archives, env)
