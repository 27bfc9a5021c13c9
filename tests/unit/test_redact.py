"""Credentials inside URLs are cut out of every message that can reach a user."""

from __future__ import annotations

import pytest

from recserve_serving.redact import has_credentials, redact

pytestmark = pytest.mark.unit


def test_credentials_in_a_tracking_uri_are_redacted_from_messages() -> None:
    message = "registry at https://alice:s3cret@mlflow:5000/api failed; retry http://bob@host"
    assert redact(message) == "registry at https://***@mlflow:5000/api failed; retry http://***@host"
    assert redact("models:/ranker@champion at http://mlflow:5000") == (
        "models:/ranker@champion at http://mlflow:5000"
    )


def test_credentials_in_a_url_are_detected() -> None:
    assert has_credentials("https://alice:s3cret@mlflow:5000")
    assert has_credentials("https://alice@mlflow:5000")
    assert not has_credentials("https://mlflow:5000/path@x")
