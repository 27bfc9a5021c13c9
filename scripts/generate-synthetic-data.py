"""Regenerate data/synthetic-shop/ (the generated online shop) from recserve_serving.synthetic.

The files are committed so that a build reads them like any user's data; this script is how
they were made, and rerunning it writes the same bytes (a unit test checks that).

Usage: python scripts/generate-synthetic-data.py           rewrite the two Parquet files
       python scripts/generate-synthetic-data.py --check   exit 1 if they differ from a fresh run
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "serving"))

from recserve_serving.synthetic import generate  # noqa: E402

TARGET = REPO / "data" / "synthetic-shop"


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        with tempfile.TemporaryDirectory() as scratch:
            fresh = generate(Path(scratch))
            stale = [p.name for p in fresh if (TARGET / p.name).read_bytes() != p.read_bytes()]
        if stale:
            print(f"stale in {TARGET}: {', '.join(stale)}; run python scripts/generate-synthetic-data.py")
            return 1
        return 0
    if argv:
        print(__doc__)
        return 2
    for path in generate(TARGET):
        print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
