"""``recserve crd``: print the CRD generated from the API models, or check the committed one."""

from __future__ import annotations

from recserve_operator.api.crd import add_arguments, run

__all__ = ["add_arguments", "run"]
