"""``model=pretrained``: a scikit-learn model already in MLflow (``model.uri``: ``runs:/...`` or ``models:/...``),
explained without training. Loading resolves a registered name or alias through the tracker first, so the stages
load it (``Context.load_pretrained``); this module registers what the rest of the package asks about it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xaitk_exp.models.registry import ModelSource


def _has_uri(node: Mapping[str, Any]) -> bool:
    return not node.get("source") and bool(node.get("uri"))


SOURCE = ModelSource(
    name="pretrained",
    load=None,  # loaded through the tracker, which resolves registered names and aliases: Context.load_pretrained
    framework="scikit-learn",
    matches=_has_uri,
    image_model=False,
)
