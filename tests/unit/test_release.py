"""The files that cannot import ``recserve_serving.release`` say what it says: the version, the
image names and the Ray version."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from recserve_operator.settings import OperatorSettings
from recserve_serving import release

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
CHART = REPO / "charts" / "recserve"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_version_is_the_packages() -> None:
    assert PYPROJECT["project"]["version"] == release.VERSION
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"] == release.VERSION


@pytest.mark.parametrize("name", sorted(release.IMAGES))
def test_each_dockerfile_builds_its_image(name: str) -> None:
    text = (DOCKER / name).read_text()
    assert re.findall(r"^ARG VERSION=(\S+)$", text, re.M) == [release.VERSION]
    assert re.findall(rf"docker build -f docker/{re.escape(name)} .*-t (\S+) \.$", text, re.M) == [
        release.IMAGES[name]
    ]


def test_every_dockerfile_has_an_image_name() -> None:
    assert {p.name for p in DOCKER.glob("*.Dockerfile")} == set(release.IMAGES)


def test_the_docker_readme_builds_the_same_names() -> None:
    text = re.sub(r"\\\n\s*", "", (DOCKER / "README.md").read_text())
    built = dict(re.findall(r"docker build -f docker/(\S+) .*?-t (\S+) \.", text))
    assert built == release.IMAGES


def test_the_charts_default_images_are_the_releases() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def default(image: dict[str, str]) -> str:
        return f"{image['repository']}:{image.get('tag') or release.VERSION}"

    assert default(values["operator"]["image"]) == release.OPERATOR_IMAGE
    assert default(values["images"]["serving"]) == release.SERVING_IMAGE
    assert default(values["images"]["builder"]) == release.BUILDER_IMAGE
    settings = OperatorSettings()
    assert settings.serving_image == release.SERVING_IMAGE
    assert settings.builder_image == release.BUILDER_IMAGE


def test_the_ray_version_is_the_pinned_one() -> None:
    lock = re.findall(r"^ray==(\S+)$", (REPO / "requirements.lock").read_text(), re.M)
    assert lock == [release.RAY_VERSION]
    pins = [Requirement(line) for line in (REPO / "requirements.in").read_text().splitlines()]
    assert [str(r.specifier) for r in pins if r.name == "ray"] == [f"=={release.RAY_VERSION}"]
    (ray,) = [Requirement(d) for d in PYPROJECT["project"]["dependencies"] if Requirement(d).name == "ray"]
    assert ray.specifier.contains(release.RAY_VERSION)
