"""Where a model's serving pods run: ``spec.placement``, the node selector and tolerations of
its Ray head and workers (KServe's ``nodeSelector``/``tolerations`` on a predictor).

Teams keep dedicated node pools for inference, tainted so that nothing else lands there; a model
opts in by selecting the pool's label and tolerating its taint. Build Jobs are not affected:
they run where their own resources (a GPU product, or any CPU node) take them.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from recserve_serving.schema import CamelModel
from recserve_serving.spec_rules import CelRule, Problem, cel_rules, hinted_pattern, raise_if_any

LABEL_KEY_PATTERN = hinted_pattern(
    r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$",
    "a Kubernetes label key: an optional DNS-subdomain prefix and '/', then a name of at most 63 "
    "characters, e.g. recserve.dev/pool",
)
LABEL_VALUE = hinted_pattern(
    r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$",
    "a Kubernetes label value: at most 63 letters, digits, '-', '_' or '.', starting and ending "
    "with a letter or digit, e.g. inference",
)
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_PRODUCT_HINT = (
    "select a GPU product with spec.serving.resources.gpuProduct: it places the GPU workers and "
    "keeps the head on CPU nodes"
)
MAX_SELECTOR_LABELS = 16
MAX_TOLERATIONS = 16


class Toleration(CamelModel):
    """A pod toleration, as Kubernetes spells it."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                "self.operator != 'Exists' || !has(self.value) || self.value == ''",
                "operator Exists takes no value",
                ".value",
            ),
            CelRule(
                "self.operator == 'Exists' || (has(self.key) && self.key != '')",
                "operator Equal needs a key (an empty key with Exists tolerates every taint)",
                ".key",
            ),
            CelRule(
                "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                "tolerationSeconds applies to effect NoExecute only",
                ".tolerationSeconds",
            ),
        )
    )

    key: str | None = Field(default=None, max_length=317, pattern=LABEL_KEY_PATTERN)
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = Field(default=None, max_length=63, pattern=LABEL_VALUE)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="The taint effect tolerated; every effect when unset."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, description="How long a NoExecute taint is tolerated before eviction."
    )

    @model_validator(mode="after")
    def _kubernetes_rules(self) -> Toleration:
        problems = []
        if self.operator == "Exists" and self.value:
            problems.append(Problem(("value",), f"operator Exists takes no value (got {self.value!r})"))
        if self.operator == "Equal" and not self.key:
            problems.append(
                Problem(("key",), "operator Equal needs a key; to tolerate every taint use operator Exists")
            )
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            problems.append(
                Problem(
                    ("tolerationSeconds",),
                    f"applies to effect NoExecute only (effect is {self.effect or 'unset'})",
                )
            )
        raise_if_any(problems)
        return self

    def manifest(self) -> dict[str, object]:
        """The pod-spec form: unset fields left out, as ``kubectl`` shows them."""
        return self.model_dump(by_alias=True, exclude_none=True)


class PlacementSpec(CamelModel):
    """The node selector and tolerations of the model's Ray head and worker pods."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                # CEL strings take no backslash escapes such as ``\.``: the regex's dot goes in a class.
                f"self.nodeSelector.all(k, k.matches('{LABEL_KEY_PATTERN.replace(chr(92) + '.', '[.]')}'))",
                "nodeSelector keys must be Kubernetes label keys, e.g. recserve.dev/pool",
                ".nodeSelector",
            ),
            CelRule(f"!('{GPU_PRODUCT_LABEL}' in self.nodeSelector)", GPU_PRODUCT_HINT, ".nodeSelector"),
        )
    )

    node_selector: dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]] = Field(
        default_factory=dict,
        max_length=MAX_SELECTOR_LABELS,
        description="Node labels the serving pods require (merged with a GPU worker group's "
        "nvidia.com/gpu.product selector).",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=MAX_TOLERATIONS,
        description="Taints the serving pods tolerate (added to a GPU worker group's nvidia.com/gpu one).",
    )

    @model_validator(mode="after")
    def _label_keys(self) -> PlacementSpec:
        problems = [
            Problem(("nodeSelector", key), "is not a Kubernetes label key, e.g. recserve.dev/pool")
            for key in self.node_selector
            if not re.fullmatch(LABEL_KEY_PATTERN, key)
        ]
        if GPU_PRODUCT_LABEL in self.node_selector:
            problems.append(Problem(("nodeSelector", GPU_PRODUCT_LABEL), GPU_PRODUCT_HINT))
        raise_if_any(problems)
        return self
