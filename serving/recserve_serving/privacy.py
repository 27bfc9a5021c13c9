"""Keyed pseudonyms for user identifiers, so that no raw user id is written anywhere we keep.

A user id reaches recserve in requests; what we write down (the interaction log, the online
history store, logs, events, metrics) carries ``Pseudonymizer.user(id)`` instead: an HMAC-SHA256
of the id under a secret key. The same key gives the same pseudonym everywhere, so a retrain
can join a user's logged events with their rows in the platform's own interaction table, while
anyone without the key (a log reader, a metrics scraper, a backup) cannot reverse it or test a
guessed id. Integer and string forms of one id (``42`` and ``"42"``) are one user, as they are
at the API.

The key lives in a file: in a cluster the Secret mounted into routers and retrain jobs, embedded
a file the first run generates with mode 0600. Losing the key makes every stored history and
logged event unlinkable to its user: that is erasure of everything at once, not a recovery path.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from recserve_serving.errors import RecserveError

KEY_FILE_ENV = "RECSERVE_PSEUDONYM_KEY_FILE"
PREFIX = "ph-"
"""Marks a pseudonym, so it is never mistaken for (or looked up as) a platform's raw id."""
MIN_KEY_BYTES = 16


class PrivacyKeyError(RecserveError):
    """The pseudonymization key is missing, unreadable or too short."""


class Pseudonymizer:
    """Maps a user id to its stable keyed pseudonym."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise PrivacyKeyError(
                f"the pseudonymization key has {len(key)} bytes; it needs at least {MIN_KEY_BYTES} "
                "(generate one with: python -c 'import secrets; print(secrets.token_hex(32))')"
            )
        self._key = key

    def user(self, user_id: int | str) -> str:
        if isinstance(user_id, str) and user_id.startswith(PREFIX):
            return user_id  # already a pseudonym: pseudonymizing twice would unlink the user
        digest = hmac.new(self._key, str(user_id).strip().encode(), hashlib.sha256).hexdigest()
        return PREFIX + digest[:32]

    @property
    def key_id(self) -> str:
        """A short public tag of the key (an HMAC of a fixed label, not of any id): stores keyed
        by pseudonyms record it, so that a key rotation is seen as data that must be refilled."""
        return hmac.new(self._key, b"recserve key id", hashlib.sha256).hexdigest()[:12]


def load_key(path: Path) -> bytes:
    """The key in ``path``: its text with surrounding whitespace removed (a Secret's value, or a
    generated file)."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as error:
        raise PrivacyKeyError(
            f"cannot read the pseudonymization key {path}: {error.strerror or error}; in a cluster mount "
            f"the key Secret there, embedded delete nothing and let recserve generate it"
        ) from None
    if len(key) < MIN_KEY_BYTES:
        raise PrivacyKeyError(
            f"the pseudonymization key in {path} has {len(key)} bytes, fewer than {MIN_KEY_BYTES}"
        )
    return key


def embedded_key_file(state: Path) -> Path:
    return Path(state) / "secrets" / "pseudonym.key"


def ensure_key_file(path: Path) -> Path:
    """Create ``path`` with a new random key (mode 0600) unless it exists; return it.

    The key is written to a temporary file and linked into place, so two processes starting at
    once end with one key, and a crash never leaves an empty or partial key behind."""
    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(32) + "\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)  # the first writer wins; later ones keep its key
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return path


def pseudonymizer_from(path: Path) -> Pseudonymizer:
    return Pseudonymizer(load_key(path))
