"""Saliency quality metrics: how faithful a map is to the model, and which algorithm explains it best.

- :mod:`~xaitk_exp.metrics.faithfulness`: deletion / insertion curves and AUC, MuFidelity (model calls, batched);
- :mod:`~xaitk_exp.metrics.maps`: entropy, Gini sparseness, complexity, similarity (the map alone);
- :mod:`~xaitk_exp.metrics.sanity`: other-class and permuted-label sanity checks;
- :mod:`~xaitk_exp.metrics.image`: every metric of one map, in one batched model call;
- :mod:`~xaitk_exp.metrics.summary`: aggregate runs per algorithm and rank them (names and directions in
  :mod:`~xaitk_exp.metrics.names`).
"""

