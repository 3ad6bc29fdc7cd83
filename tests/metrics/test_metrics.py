"""Each saliency metric against values computed by hand on tiny synthetic cases (no MLflow)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from xaitk_exp.errors import ConfigError
from xaitk_exp.metrics import faithfulness as F
from xaitk_exp.metrics.image import evaluate_map
from xaitk_exp.metrics.maps import complexity, gini, positive_entropy, xcorr
from xaitk_exp.metrics.sanity import other_class_similarity, permuted_label_model
from xaitk_exp.models.blackbox import SklearnBlackbox
from xaitk_exp.settings.metrics import MetricSettings, settings_from_config


class SinglePixel(ClassifierMixin, BaseEstimator):
    """A real classifier that looks at one pixel only: P(class 1) = value of flat pixel ``pixel`` (in [0, 1])."""

    def __init__(self, pixel: int = 0) -> None:
        self.pixel = pixel

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        p = np.clip(np.asarray(X, dtype=float)[:, self.pixel], 0, 1)
        return np.stack([1 - p, p], axis=1)


def _model(pixel: int, n_pixels: int) -> SinglePixel:
    return SinglePixel(pixel).fit(np.zeros((2, n_pixels)), [0, 1])


# ----- AUC and curves ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("curve", "expected"),
    [
        ([1.0, 0.5, 0.0], 0.5),  # (1.5 - 0.5 - 0) / 2
        ([0.8, 0.4, 0.2, 0.0], 1.0 / 3),  # (1.4 - 0.4 - 0) / 3
        ([1.0, 1.0, 1.0, 1.0], 1.0),
        ([1.0, 0.0, 0.0, 0.0, 0.0], 0.125),  # (1 - 0.5) / 4: the best deletion curve from 1
        ([0.0, 1.0], 0.5),
    ],
)
def test_auc_matches_the_trapezoid_formula_by_hand(curve, expected):
    assert F.auc(np.array(curve)) == pytest.approx(expected)


def test_auc_refuses_a_single_point():
    with pytest.raises(ValueError, match="2 points"):
        F.auc(np.array([1.0]))


def test_order_is_by_decreasing_signed_saliency_with_seeded_ties():
    s = np.array([[0.5, -0.9], [0.1, 0.5]])
    order = F.saliency_order(s, [0, 1])
    assert set(order[:2]) == {0, 3} and list(order[2:]) == [2, 1]  # negative last: signed, no abs
    assert np.array_equal(order, F.saliency_order(s, [0, 1]))  # repeatable
    flat = np.zeros((4, 4))
    orders = {tuple(F.saliency_order(flat, [s_])) for s_ in range(6)}
    assert len(orders) > 1 and tuple(range(16)) not in orders  # ties broken randomly, not in raster order


def test_deletion_and_insertion_images_switch_step_pixels_per_row():
    img = np.arange(1, 5, dtype=float).reshape(2, 2) / 4  # pixels 0.25, 0.5, 0.75, 1.0
    sub = np.zeros_like(img)
    order = np.array([3, 0, 2, 1])
    dele = F.curve_images(img, sub, order, 1, "deletion")
    assert dele.shape == (5, 2, 2)
    assert np.array_equal(dele[0], img) and np.array_equal(dele[4], sub)
    assert np.array_equal(dele[2].ravel(), [0, 0.5, 0.75, 0])  # pixels 3 then 0 deleted
    ins = F.curve_images(img, sub, order, 3, "insertion")  # n = ceil(4 / 3) = 2 steps, 3 points
    assert ins.shape == (3, 2, 2)
    assert np.array_equal(ins[0], sub) and np.array_equal(ins[2], img)
    assert np.array_equal(ins[1].ravel(), [0.25, 0, 0.75, 1.0])  # pixels 3, 0, 2 inserted


def test_colour_pixels_switch_all_channels_and_auto_substrate_is_the_mean_colour():
    rgb = np.zeros((2, 2, 3))
    rgb[..., 0], rgb[..., 2] = 1.0, np.array([[0.0, 0.2], [0.4, 0.6]])
    sub = F.make_substrate(rgb)
    assert np.allclose(sub[0, 0], [1.0, 0.0, 0.3]) and np.allclose(sub, sub[0, 0])
    dele = F.curve_images(rgb, sub, np.array([1, 0, 2, 3]), 1, "deletion")
    assert np.allclose(dele[1, 0, 1], sub[0, 1]) and np.allclose(dele[1, 1, 1], rgb[1, 1])


@pytest.mark.parametrize(
    ("image", "kind", "expected"),
    [
        (np.full((3, 3), 0.7), "auto", 0.0),  # grayscale: zeros
        (np.full((3, 3, 1), 0.7), "auto", 0.0),  # grayscale with a channel axis: zeros
        (np.full((3, 3), 0.7), "mean", 0.7),
        (np.full((3, 3), 0.7), "blur", 0.7),  # blurring a constant image changes nothing
        (np.full((3, 3), 0.7), 0.25, 0.25),
    ],
)
def test_substrates(image, kind, expected):
    sub = F.make_substrate(image, kind)
    assert sub.shape == image.shape and np.allclose(sub, expected)


# ----- a model that looks at one pixel ----------------------------------------------------------------------------
def test_ranking_the_only_pixel_the_model_uses_first_reaches_the_best_scores_in_one_predict_call():
    h, w, pixel = 3, 3, 4
    image = np.ones((h, w))  # P(class 1) = 1; deleting pixel 4 (to 0) drops it to 0
    bb = SklearnBlackbox(_model(pixel, h * w), chunk_size=1024)
    sal = np.zeros((h, w))
    sal.flat[pixel] = 1.0
    settings = MetricSettings(step=1, subsets=64, fraction=0.3)
    got = evaluate_map(bb.predict, image, sal, 1, settings, (0, 7))
    n = h * w
    assert bb.n_calls == 1  # every curve and the subsets in one batched predict call
    assert np.array_equal(got.curves["Deletion"], [1.0] + [0.0] * n)
    assert got.values["Deletion_AUC"] == pytest.approx(0.5 / n)  # the least any deletion curve from 1 can have
    assert got.values["Insertion_AUC"] == pytest.approx((n - 0.5) / n)  # the most an insertion curve from 0 can
    assert got.values["Deletion_AUC"] <= got.values["Deletion_AUC_random"]
    assert got.values["Insertion_AUC"] >= got.values["Insertion_AUC_random"]
    assert got.values["MuFidelity"] == pytest.approx(1.0)  # drop is 1 exactly when the subset holds the pixel
    assert got.values["Sparseness_gini"] == pytest.approx(1 - 1 / n)
    assert got.values["Entropy_positive"] == pytest.approx(0.0)
    worst = evaluate_map(bb.predict, image, -sal, 1, settings, (0, 7))  # the same pixel ranked last
    assert worst.values["Deletion_AUC"] == pytest.approx((n - 0.5) / n)
    assert worst.values["MuFidelity"] == pytest.approx(-1.0)


def test_random_order_deletion_auc_is_where_the_pixel_falls_in_it():
    h, w, pixel = 2, 4, 5
    bb = SklearnBlackbox(_model(pixel, h * w))
    got = evaluate_map(bb.predict, np.ones((h, w)), np.zeros((h, w)), 1, MetricSettings(step=2, subsets=8), (3,))
    rand = F.random_order(h * w, [3, 1])
    deleted_at = int(np.where(rand == pixel)[0][0]) // 2 + 1  # the step that deletes the pixel
    n = 4
    expected = [1.0] * deleted_at + [0.0] * (n + 1 - deleted_at)
    assert np.array_equal(got.curves["Deletion_random"], expected)
    assert got.values["Deletion_AUC_random"] == pytest.approx(F.auc(np.array(expected)))


def test_metric_shapes_are_checked():
    bb = SklearnBlackbox(_model(0, 4))
    with pytest.raises(ValueError, match="does not match"):
        evaluate_map(bb.predict, np.ones((2, 2)), np.zeros((3, 3)), 1, MetricSettings())


def test_predict_blocks_splits_calls_only_past_the_budget():
    bb = SklearnBlackbox(_model(0, 4))
    blocks = [np.full((3, 2, 2), v) for v in (0.1, 0.2, 0.3)]
    out = F.predict_blocks(bb.predict, blocks)
    assert bb.n_calls == 1 and [len(o) for o in out] == [3, 3, 3]
    assert np.allclose([o[0, 1] for o in out], [0.1, 0.2, 0.3])
    out = F.predict_blocks(bb.predict, blocks, budget=12)
    assert bb.n_calls == 4 and np.allclose(out[2][:, 1], 0.3)


# ----- MuFidelity -------------------------------------------------------------------------------------------------
def test_subset_masks_have_the_requested_size_and_repeat_with_the_seed():
    m = F.subset_masks(20, 50, 0.25, [1, 2])
    assert m.shape == (50, 20) and (m.sum(axis=1) == 5).all()
    assert np.array_equal(m, F.subset_masks(20, 50, 0.25, [1, 2]))
    assert not np.array_equal(m, F.subset_masks(20, 50, 0.25, [1, 3]))


def test_spearman_by_hand_and_nan_when_constant():
    assert F.spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    # ranks [1,2,3] vs [1,3,2]: d^2 sum 2 -> 1 - 6*2/(3*8) = 0.5
    assert F.spearman(np.array([1.0, 2, 3]), np.array([5.0, 9, 7])) == pytest.approx(0.5)
    assert math.isnan(F.spearman(np.array([1.0, 1, 1]), np.array([1.0, 2, 3])))


def test_mufidelity_by_hand():
    sal = np.array([[1.0, 0.0], [0.0, 2.0]])
    masks = np.array([[1, 0, 0, 0], [0, 0, 0, 1], [1, 0, 0, 1], [0, 1, 1, 0]], dtype=bool)  # sums 1, 2, 3, 0
    masked = np.array([0.7, 0.6, 0.2, 0.95])  # drops 0.3, 0.4, 0.8, 0.05: same ranking
    assert F.mufidelity(sal, masks, 1.0, masked) == pytest.approx(1.0)
    assert F.mufidelity(sal, masks, 1.0, masked[::-1]) == pytest.approx(F.spearman([1, 2, 3, 0], [0.05, 0.8, 0.4, 0.3]))


# ----- map-only metrics -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 0, 0, 1], 0.75),  # one non-zero of N = 4: 1 - 1/N
        ([1, 1, 1, 1], 0.0),
        ([0, 0, 1, 1], 0.5),  # sum_k (2k - 5) c_k / (4 * 2) = (1 + 3) / 8
        ([0, 0, -1, 1], 0.5),  # of |S|
        ([1, 2, 3, 4], 0.25),  # (-3 - 2 + 3 + 12) / (4 * 10)
    ],
)
def test_gini_by_hand(values, expected):
    assert gini(np.array(values, dtype=float).reshape(2, 2)) == pytest.approx(expected)


def test_entropy_of_the_positive_part_and_complexity_by_hand():
    s = np.array([[1.0, 1.0], [0.0, -5.0]])
    assert positive_entropy(s) == pytest.approx(math.log(2))  # P = [1/2, 1/2]; the negative pixel is ignored
    assert complexity(np.array([[1.0, 1.0], [0.0, -2.0]])) == pytest.approx(1.5 * math.log(2))  # P = [1/4, 1/4, 1/2]
    assert math.isnan(positive_entropy(-np.ones((2, 2)))) and math.isnan(gini(np.zeros((2, 2))))
    assert positive_entropy(np.ones((4, 4))) == pytest.approx(math.log(16))  # the maximum


def test_xcorr_and_the_other_class_sanity_check():
    a = np.array([[0.0, 1.0], [2.0, 3.0]])
    assert xcorr(a, 2 * a + 1) == pytest.approx(1.0) and xcorr(a, -a) == pytest.approx(-1.0)
    assert xcorr(a, np.zeros((2, 2))) == 0.0 and xcorr(np.ones((2, 2)), np.ones((2, 2))) == 1.0
    maps = np.stack([a, a, a])
    assert other_class_similarity(maps, 0) == pytest.approx(1.0)
    maps[1:] = -a
    assert other_class_similarity(maps, 0, (5,)) == pytest.approx(-1.0)
    assert math.isnan(other_class_similarity(maps[:1], 0))


def test_permuted_label_model_is_a_fresh_clone_fitted_on_shuffled_labels():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.random((200, 2, 2))
    y = (X[:, 0, 0] > 0.5).astype(int)
    model = LogisticRegression().fit(X.reshape(200, -1), y)
    perm = permuted_label_model(model, X, y, seed=1)
    assert perm is not model and perm.get_params() == model.get_params()
    assert model.score(X.reshape(200, -1), y) > 0.9 and perm.score(X.reshape(200, -1), y) < 0.75


# ----- settings ---------------------------------------------------------------------------------------------------
def test_default_settings_and_auto_step():
    s = settings_from_config({"enabled": True, "step": "auto"})
    assert s.step_for(64) == 1 and s.step_for(784) == 8 and s.step_for(224 * 224) == 502
    assert not settings_from_config(None).enabled


@pytest.mark.parametrize(
    ("node", "key"),
    [
        ({"step": 0}, "metrics.step"),
        ({"step": "big"}, "metrics.step"),
        ({"substrate": "noise"}, "metrics.substrate"),
        ({"blur_sigma": -1}, "metrics.blur_sigma"),
        ({"mufidelity": {"subsets": 2}}, "metrics.mufidelity.subsets"),
        ({"mufidelity": {"fraction": 1.0}}, "metrics.mufidelity.fraction"),
        ({"sanity": "yes"}, "metrics.sanity"),
        ({"enabled": 1}, "metrics.enabled"),
        ({"seed": -3}, "metrics.seed"),
    ],
)
def test_bad_settings_name_the_key(node, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + "="):
        settings_from_config(node)


# ----- pictures ---------------------------------------------------------------------------------------------------
def test_pictures_are_pngs_with_what_they_show(tmp_path):
    """Pictures are drawn with Pillow (their cost is measured in benchmarks/bench_metrics.py, not here)."""
    from PIL import Image

    from xaitk_exp.viz.curves import comparison_figure, curves_figure

    curves = {k: np.linspace(1, 0, 65) for k in ("Deletion", "Deletion_random", "Insertion", "Insertion_random")}
    path = curves_figure(curves, {"Deletion_AUC": 0.5}, tmp_path / "c.png", "title")
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    assert ((pixels == (178, 24, 43)).all(axis=1)).any()  # the deletion curve is drawn
    rows = [{"algorithm": "a", "Deletion_AUC_mean": 0.2, "Deletion_AUC_std": 0.1}, {"algorithm": "b"}]
    path = comparison_figure(rows, ["Deletion_AUC", "MuFidelity"], tmp_path / "cmp.png", "t")
    with Image.open(path) as im:
        assert im.size[1] > 20
