"""Generate the values table of charts/recserve/README.md from the `# --` comments in values.yaml.

A key preceded by `# -- text` (continued by further `#` lines) is one table row; its default is
the YAML value under it, so a documented map (say `resources`) covers its children. Every leaf of
values.yaml must be covered by a documented key or one of its parents, or this script fails.

Usage: python scripts/chart-readme.py           rewrite the table in the README
       python scripts/chart-readme.py --check   exit 1 if the README table is stale
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "recserve"
START, END = "<!-- values-table:start -->", "<!-- values-table:end -->"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?P<rest>.*)$")


def documented_keys(text: str) -> list[tuple[str, str]]:
    """(dotted key, description) for every key with a `# --` comment, in file order."""
    rows: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped[1:].strip())
            continue
        match = KEY.match(line)
        if not match or stripped.startswith("-"):
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        if pending is not None:
            rows.append((".".join(k for _, k in stack), " ".join(pending)))
            pending = None
    return rows


def leaves(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [leaf for k, v in node.items() for leaf in leaves(v, f"{prefix}.{k}" if prefix else k)]
    return [prefix]


def lookup(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node[part]
    return node


def table(values_text: str) -> str:
    values = yaml.safe_load(values_text)
    rows = documented_keys(values_text)
    covered = {key for key, _ in rows}
    missing = [
        leaf
        for leaf in leaves(values)
        if not any(leaf == key or leaf.startswith(key + ".") for key in covered)
    ]
    if missing:
        raise SystemExit(f"values.yaml keys without a `# --` description: {', '.join(missing)}")
    lines = ["| key | default | description |", "| --- | --- | --- |"]
    for key, description in rows:
        default = json.dumps(lookup(values, key), separators=(",", ":"))
        cells = [f"`{key}`", f"`{default}`", description]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def render(readme: str, values_text: str) -> str:
    head, sep1, rest = readme.partition(START)
    _, sep2, tail = rest.partition(END)
    if not (sep1 and sep2):
        raise SystemExit(f"README.md lacks the {START} ... {END} markers")
    return f"{head}{START}\n{table(values_text)}\n{END}{tail}"


def main(argv: list[str]) -> int:
    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    wanted = render(readme, (CHART / "values.yaml").read_text())
    if "--check" in argv:
        if wanted != readme:
            print("charts/recserve/README.md values table is stale: run python scripts/chart-readme.py")
            return 1
        return 0
    readme_path.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
