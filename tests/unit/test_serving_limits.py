"""spec.serving.limits: defaults that bound every request, and each limit reaching the place
that enforces it (the router's args, Ray Serve's queue bounds)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from recserve_operator.planners.serve_config import DeployPlan, ServedVersion, ServeSite, plan_serve_config
from recserve_operator.validate import load_model
from recserve_serving.serve.config import (
    RANKER_DEPLOYMENT,
    ROUTER_DEPLOYMENT,
    RouterConfig,
    check_with_ray,
    render_serve_config,
)
from recserve_serving.serving_spec import LimitsSpec, ServingSpec

pytestmark = pytest.mark.unit
EXAMPLE = Path(__file__).resolve().parents[2] / "manifests/examples/movielens-ranker.yaml"
LIMITS = {
    "maxBodyBytes": 2048,
    "maxTextChars": 300,
    "requestTimeoutSeconds": 2.5,
    "maxQueuedRequests": 17,
    "retryAfterSeconds": 4,
}


def test_unbounded_requests_are_not_the_default():
    limits = ServingSpec().limits
    assert 0 < limits.max_body_bytes <= 64 * 2**20
    assert 0 < limits.max_text_chars <= 1_000_000
    assert 0 < limits.request_timeout_seconds <= 3600
    assert limits.max_queued_requests >= 1


@pytest.mark.parametrize(
    "field", ["maxBodyBytes", "maxTextChars", "requestTimeoutSeconds", "maxQueuedRequests"]
)
def test_a_limit_cannot_be_switched_off_with_zero(field):
    with pytest.raises(ValidationError, match=field):
        LimitsSpec.model_validate({field: 0})


def configured():
    loaded = load_model(EXAMPLE)
    serving = ServingSpec.model_validate({**loaded.spec.serving.to_dict(), "limits": LIMITS})
    spec = loaded.spec.model_copy(update={"serving": serving})
    model = loaded.model_copy(update={"spec": spec})
    plan = DeployPlan(stable=ServedVersion(label="movielens-ranker/1", engine_dir="/engines/a"))
    return plan_serve_config(
        model, plan, ServeSite(index_dir="/index", online_dir="/online", pseudonym_key_file="/keys/pseudonym")
    )


def test_spec_limits_reach_the_router_args():
    rendered = render_serve_config(configured())
    router_app = next(app for app in rendered["applications"] if app["name"] == "movielens-ranker")
    assert RouterConfig.model_validate(router_app["args"]).limits == LimitsSpec.model_validate(LIMITS)


def test_queue_bound_is_rendered_for_router_and_ranker_and_ray_accepts_it():
    rendered = render_serve_config(configured())
    deployments = [d for app in rendered["applications"] for d in app["deployments"]]
    assert {d["name"] for d in deployments} == {ROUTER_DEPLOYMENT, RANKER_DEPLOYMENT}
    for deployment in deployments:
        assert deployment["max_queued_requests"] == 17
        assert deployment["backpressure_config"] == {"status_code": 503, "retry_after_s": 4}
    check_with_ray(rendered)
