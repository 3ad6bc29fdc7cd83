"""The names of the saliency quality metrics and which way is better (the ranking reads these)."""

from __future__ import annotations

#: +1: higher is better, -1: lower is better, 0: descriptive (not ranked).
DIRECTIONS: dict[str, int] = {
    "Deletion_AUC": -1,
    "Insertion_AUC": 1,
    "MuFidelity": 1,
    "Deletion_AUC_random": 0,
    "Insertion_AUC_random": 0,
    "Entropy_positive": 0,
    "Sparseness_gini": 0,
    "Complexity": 0,
    "Sanity_other_class_xcorr": -1,
    "Sanity_permuted_labels_xcorr": -1,
}


METRICS: tuple[str, ...] = tuple(DIRECTIONS)


#: the faithfulness metrics whose mean ranks define the overall rank
RANKED: tuple[str, ...] = ("Deletion_AUC", "Insertion_AUC", "MuFidelity")


#: task=detection's metrics (``detection/quality.py``): deletion / insertion scored with D-RISE's similarity, their
#: random-order baselines, and the pointing game (1 when the map's peak lies in the matched ground-truth box, 0 when not)
POINTING_GAME = "Pointing_game"
DETECTION_DIRECTIONS: dict[str, int] = {
    "Deletion_AUC": -1,
    "Insertion_AUC": 1,
    "Deletion_AUC_random": 0,
    "Insertion_AUC_random": 0,
    POINTING_GAME: 1,
}
DETECTION_METRICS: tuple[str, ...] = tuple(DETECTION_DIRECTIONS)
