"""The knob search: the cheapest setting that meets the SLO, or the closest when none does."""

from __future__ import annotations

import json

import pytest
from autoscale_fixtures import knobs, profile_doc

from recserve_operator.autoscale.figures import figures
from recserve_operator.autoscale.patch import changes_between
from recserve_operator.autoscale.profile import parse_profile
from recserve_operator.autoscale.recommend import recommend
from recserve_operator.autoscale.simulate import simulate
from recserve_operator.autoscale.trace import Trace

pytestmark = pytest.mark.unit
SERVICE = parse_profile(json.dumps(profile_doc()), "p.json").service_model()
TRACE = Trace("steady", "rates", (0.0,), (10.0,), 300.0)  # above one replica's 8.2 rps
ARRIVALS = TRACE.arrivals(seed=0)
BASE = knobs(min_replicas=1, max_replicas=4, max_ongoing_requests=32, upscale_delay_s=30, startup_s=15)


def test_the_recommendation_meets_the_slo_and_costs_no_more_than_holding_the_maximum():
    rec = recommend(ARRIVALS, TRACE.duration_s, BASE, None, 32, SERVICE, 1500.0)
    assert not rec.current.met  # one replica and a 30 s delay: the backlog of the first minute
    assert rec.met and rec.best.figures.p99_all_ms <= 1500
    always_four = simulate(
        ARRIVALS, BASE.__class__(**{**BASE.__dict__, "min_replicas": 4}), SERVICE, duration_s=300
    )
    assert rec.best.figures.replica_seconds <= always_four.replica_seconds
    # The figures shown are the simulation of the settings shown.
    again = figures(simulate(ARRIVALS, rec.best.knobs, SERVICE, duration_s=300), slo_p99_ms=1500.0)
    assert again == rec.best.figures
    assert changes_between(rec.current.setting, rec.best.setting, None)


def test_no_setting_meeting_the_slo_is_an_answer_with_the_closest():
    capped = knobs(min_replicas=1, max_replicas=1, max_ongoing_requests=32, startup_s=15)
    rec = recommend(ARRIVALS, TRACE.duration_s, capped, None, 32, SERVICE, 1500.0)
    assert not rec.met
    assert rec.best.over_slo <= rec.current.over_slo
    assert rec.best.knobs.max_replicas == 1


def test_progress_is_reported():
    seen: list[tuple[int, int]] = []
    recommend(
        ARRIVALS[:300], 30.0, BASE, None, 32, SERVICE, 5000.0, progress=lambda d, t: seen.append((d, t))
    )
    assert seen[0][0] == 1 and seen[-1][0] == seen[-1][1]
