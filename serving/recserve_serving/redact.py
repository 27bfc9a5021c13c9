"""Keep credentials that ride inside URLs out of anything a user or another pod can read.

An MLflow tracking URI such as ``https://user:secret@mlflow`` works, but it ends up in error
messages, and from there in a model's status and events, which anyone who can read the model
sees. Every such message passes through ``redact`` before it leaves the process.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
REDACTED = "***"


def redact(text: str) -> str:
    """``text`` with the ``user:password@`` part of every URL in it replaced by ``***@``."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)


def has_credentials(url: str) -> bool:
    parts = urlsplit(url)
    return parts.username is not None or parts.password is not None
