"""Saliency quality metrics: how faithful a map is to the model, and which algorithm explains it best.

- :mod:`~xaitk_exp.metrics.faithfulness`: deletion / insertion curves and AUC, MuFidelity (model calls, batched);
- :mod:`~xaitk_exp.metrics.maps`: entropy, Gini sparseness, complexity, similarity (the map alone);
- :mod:`~xaitk_exp.metrics.sanity`: other-class and permuted-label sanity checks;
- :mod:`~xaitk_exp.metrics.image`: every metric of one map, in one batched model call;
- :mod:`~xaitk_exp.metrics.summary`: aggregate runs per algorithm and rank them;
- :mod:`~xaitk_exp.metrics.record`: the saliency stage's hook; :mod:`~xaitk_exp.metrics.pictures`: PNGs.
"""

from __future__ import annotations

from xaitk_exp.metrics.faithfulness import auc, curve_images, make_substrate, mufidelity, saliency_order
from xaitk_exp.metrics.image import ImageMetrics, evaluate_map
from xaitk_exp.metrics.maps import complexity, gini, positive_entropy, xcorr
from xaitk_exp.metrics.settings import MetricSettings, settings_from_config

__all__ = [
    "ImageMetrics",
    "MetricSettings",
    "auc",
    "complexity",
    "curve_images",
    "evaluate_map",
    "gini",
    "make_substrate",
    "mufidelity",
    "positive_entropy",
    "saliency_order",
    "settings_from_config",
    "xcorr",
]
