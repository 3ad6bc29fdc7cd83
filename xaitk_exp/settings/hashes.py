"""Each stage's config hash: the part of the composed config that decides whether a FINISHED run can be reused.

A hash is of the config as composed (not of the typed settings, whose defaults and normalised values would change
the hashes of runs recorded before), so this is the one place outside the settings' own check that reads run
settings from the config itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xaitk_exp.settings.config import resolved_num_images, trained_here
from xaitk_exp.settings.nodes import config_hash, to_dict
from xaitk_exp.settings.saliency import auto_keys, resolve_auto

#: the stages :func:`stage_hash` knows: ``saliency_work`` is what was done to an image, whichever query selected it
HASHED_STAGES = ("train", "evaluation", "saliency_work", "saliency")


def stage_hash(cfg: Any, stage: str, image_shape: Callable[[], tuple[int, ...]] | None = None) -> str:
    """The config hash of ``stage`` (one of :data:`HASHED_STAGES`). ``image_shape`` gives the images' shape, asked
    only for a saliency stage whose node has ``auto`` values (they are hashed as resolved)."""
    c = cfg
    train = config_hash(c.dataset, {k: v for k, v in to_dict(c.model).items() if k != "register"})
    if stage == "train":
        return train
    node = to_dict(c.evaluation)  # num_images hashed as resolved: the default digits keep their hash (20)
    node["num_images"] = resolved_num_images(node.get("num_images"), c.model) or "every image"
    evaluation = config_hash(train, node, *([] if trained_here(c.model) else ["every image"]))
    if stage == "evaluation":
        return evaluation
    maps = [c.maps] if c.get("maps") and str(c.maps.get("top_k", "auto")) != "auto" else []  # old hashes stay
    saliency = c.saliency
    if auto_keys(to_dict(saliency)):  # hashed as resolved: 8x8 digits keep the hash of the sizes they had
        if image_shape is None:
            raise ValueError(f"stage_hash({stage!r}) of a saliency node with auto values needs the image shape")
        saliency = resolve_auto(to_dict(saliency), tuple(image_shape()))
    if stage == "saliency_work":  # what was done to an image, whichever query selected it
        return config_hash(evaluation, saliency, c.get("metrics"), c.chunk_size, *maps)
    # detection's query keys hashed only when set: classification configs keep their hashes
    query = {k: v for k, v in to_dict(c.query).items() if v is not None or k not in ("min_score", "label")}
    # chunking changes float bits
    return config_hash(evaluation, saliency, query, c.get("metrics"), c.chunk_size, *maps)
