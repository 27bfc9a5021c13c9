"""The spec patch a recommendation amounts to, as YAML to read and as an in-place manifest edit.

The edit keeps the manifest as its owner wrote it (comments, order, quoting): it changes only the
lines of ``spec.serving.autoscaling`` that the patch names, adding the keys or blocks that are
missing. The result is parsed back and must equal the manifest with the patch merged, or nothing
is written: a layout this editor does not understand gets the patch to apply by hand instead.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from recserve_operator.autoscale.recommend import Setting
from recserve_serving.errors import InvalidRequest

PATH = ("spec", "serving", "autoscaling")
Changes = dict[str, int | float | None]  # camelCase key -> new value; None removes the key


class PatchError(InvalidRequest):
    """The manifest could not be edited in place; the message carries the patch to apply by hand."""


def number(value: float) -> int | float:
    """2.0 -> 2, so the patch reads like a hand-written spec."""
    return int(value) if float(value).is_integer() else value


def setting_fields(setting: Setting) -> Changes:
    return {
        "minReplicas": setting.min_replicas,
        "targetOngoingRequests": number(setting.target),
        "upscaleDelaySeconds": number(setting.upscale_delay_s),
        "downscaleDelaySeconds": number(setting.downscale_delay_s),
        "maxOngoingRequests": setting.max_ongoing,
    }


def changes_between(current: Setting, recommended: Setting, current_initial: int | None) -> Changes:
    """The keys whose value differs; ``initialReplicas`` is raised when a new minimum passes it."""
    before, after = setting_fields(current), setting_fields(recommended)
    changed: Changes = {k: v for k, v in after.items() if before[k] != v}
    if current_initial is not None and current_initial < recommended.min_replicas:
        changed["initialReplicas"] = recommended.min_replicas
    return changed


def patch_yaml(changes: Changes) -> str:
    """A merge patch (``kubectl patch --type merge``; null removes a key)."""
    body: dict[str, Any] = {"spec": {"serving": {"autoscaling": dict(changes)}}}
    return yaml.safe_dump(body, sort_keys=False, default_flow_style=False)


def _merged(document: dict[str, Any], changes: Changes) -> dict[str, Any]:
    expected = copy.deepcopy(document)
    node = expected
    for key in PATH:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    for key, value in changes.items():
        if value is None:
            node.pop(key, None)
        else:
            node[key] = value
    return expected


_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):(?P<rest>.*)$")


def _content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block(lines: list[str], start: int, end: int, key: str, indent: int) -> int | None:
    """The line of ``key:`` at ``indent`` within lines[start:end], if any."""
    for i in range(start, end):
        match = _KEY.match(lines[i])
        if match and len(match["indent"]) == indent and match["key"] == key:
            return i
    return None


def _block_end(lines: list[str], head: int) -> int:
    """One past the last content line nested under the key at ``head``."""
    indent = _indent(lines[head])
    end = head + 1
    for i in range(head + 1, len(lines)):
        if _content(lines[i]):
            if _indent(lines[i]) <= indent:
                break
            end = i + 1
    return end


def _child_indent(lines: list[str], head: int, end: int) -> int:
    for i in range(head + 1, end):
        if _content(lines[i]):
            return _indent(lines[i])
    return _indent(lines[head]) + 2


def _edit(lines: list[str], changes: Changes) -> list[str]:
    start, end, indent = 0, len(lines), 0
    for depth, key in enumerate(PATH):
        found = _block(lines, start, end, key, indent)
        if found is None:
            if depth == 0:
                raise PatchError("the manifest has no top-level `spec:` line")
            missing = [" " * (indent + 2 * n) + f"{k}:" for n, k in enumerate(PATH[depth:])]
            lines[end:end] = missing
            start = end = end + len(missing)
            indent += 2 * len(missing)
            break
        match = _KEY.match(lines[found])
        if match is not None and match["rest"].split("#")[0].strip():
            raise PatchError(f"`{key}:` is written inline (flow style); this editor edits block style only")
        end = _block_end(lines, found)
        start = found + 1
        indent = _child_indent(lines, found, end)
    for key, value in changes.items():
        at = _block(lines, start, end, key, indent)
        if value is None:
            if at is not None:
                del lines[at]
                end -= 1
            continue
        if at is None:
            lines.insert(end, " " * indent + f"{key}: {value}")
            end += 1
            continue
        comment = re.search(r"\s+#.*$", lines[at])
        lines[at] = " " * indent + f"{key}: {value}" + (comment.group(0) if comment else "")
    return lines


def apply_to_manifest(text: str, changes: Changes, source: str) -> str:
    """``text`` with ``changes`` made to its ``spec.serving.autoscaling``, everything else kept."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PatchError(f"{source}: not YAML: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("spec"), dict):
        raise PatchError(f"{source}: not a RecommenderModel manifest (no spec mapping)")
    expected = _merged(document, changes)
    by_hand = f"apply this patch to {source} by hand:\n{patch_yaml(changes)}"
    try:
        lines = _edit(text.splitlines(), changes)
    except PatchError as error:
        raise PatchError(f"{source}: {error}; {by_hand}") from None
    edited = "\n".join(lines) + ("\n" if text.endswith("\n") else "")
    try:
        if yaml.safe_load(edited) == expected:
            return edited
    except yaml.YAMLError:
        pass
    raise PatchError(f"{source}: the in-place edit did not give the patched spec; {by_hand}")
