"""Whether a cached engine can be reused, and what happens to one that cannot.

A finished engine whose files no longer match its manifest (a bad disk, a partial copy, a
hand edit) is refused by every load. Left in place it would be refused forever, because its
key says it is already built; set aside, the next build request rebuilds it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from recserve_serving.engine import cache
from recserve_serving.engine.gc import touch_used
from recserve_serving.engine.manifest import EngineManifest
from recserve_serving.engine.runtime import verify
from recserve_serving.errors import EngineError

log = logging.getLogger(__name__)


def intact(final: Path, *, quarantine: bool) -> EngineManifest | None:
    """The manifest of the intact engine at ``final``; None when there is none to reuse.

    Only a caller holding the key's lock may ``quarantine``: otherwise it could set aside an
    engine that a concurrent build has just published in place of the corrupt one.
    """
    if not cache.finished(final):
        return None
    try:
        manifest = EngineManifest.read(final)
        verify(final, manifest)
    except EngineError as error:
        if quarantine:
            moved = cache.quarantine(final)
            log.warning("quarantined %s as %s and rebuilding it: %s", final.name, moved.name, error)
        return None
    touch_used(final)
    return manifest
