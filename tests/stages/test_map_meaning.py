"""One meaning for every map: positive saliency is evidence FOR the class, whichever shipped algorithm made it.

xaitk-saliency's scorers disagree on the sign: occlusion scoring weights the occluded region by the confidence it
costs (``reference - perturbed``), RISE scoring weights the kept region by the confidence it keeps, and both give
positive = the region raises the class's confidence. MC-RISE scoring weights the region filled with each colour by
the confidence that filling *gives* (positive = filling it raises the confidence), the opposite. Its shipped config
says ``sign: -1``; the maps are negated where they are made, so stored maps, pictures and metrics all follow one
convention. A faithful map of that convention deletes the class's evidence first: deletion falls faster and
insertion rises faster than with a random pixel order.
"""

from __future__ import annotations

import numpy as np
import pytest

from xaitk_exp.tasks import task_named

SHIPPED = task_named("classification").saliency_options()  # the classifier generators
IMAGES = 12  # >= 10 digits per algorithm
KEYS = ("Deletion_AUC", "Deletion_AUC_random", "Insertion_AUC", "Insertion_AUC_random", "MuFidelity")


def test_every_shipped_algorithm_is_covered():
    assert set(SHIPPED) >= {
        "sliding_window", "rise", "mc_rise", "occlusion_random_grid", "occlusion_sliding_radial", "rise_grid_occlusion",
    }


@pytest.mark.slow
def test_every_shipped_algorithm_beats_the_random_order(run_stage, client, tmp_path):
    """The seed's MLP on digits; each shipped algorithm, as shipped, explains the same 12 test digits."""
    from xaitk_exp.metrics.image import evaluate_map
    from xaitk_exp.models.blackbox import SklearnBlackbox
    from xaitk_exp.settings.metrics import settings_from_config
    from xaitk_exp.stages.saliency.algorithm import class_maps

    common = ("evaluation.num_images=40", f"query.max_results={IMAGES}")
    model = None
    means: dict[str, dict[str, float]] = {}
    for name in SHIPPED:
        ctx = run_stage(f"saliency={name}", *common)
        model = model if model is not None else ctx.model
        run_ids = ctx.results["saliency_run_ids"]
        assert len(run_ids) == IMAGES
        runs = [client.get_run(r) for r in run_ids]
        assert {r.data.tags["Saliency_algorithm"] for r in runs} == {name}
        means[name] = {k: float(np.mean([r.data.metrics[k] for r in runs])) for k in KEYS}
        # the stored maps carry the convention: the project's metric functions on the stored array give the
        # recorded values (the first three images; each is one batched model call)
        settings = settings_from_config(ctx.cfg.metrics)
        for run in runs[:3]:
            path = client.download_artifacts(run.info.run_id, "saliency_map_np_arrays", str(tmp_path / run.info.run_id))
            maps = class_maps(np.load(f"{path}/saliency_maps.npy"))
            image = np.load(f"{path}/image.npy")
            cls = int(run.data.tags["Predicted_class_index"])
            seed = (settings.seed, int(run.data.tags["Image_id"]))
            again = evaluate_map(SklearnBlackbox(model).predict, image, maps[cls], cls, settings, seed).values
            for key in ("Deletion_AUC", "Insertion_AUC"):
                assert again[key] == pytest.approx(run.data.metrics[key]), (name, key)

    table = "\n".join(
        f"{n:26s} deletion {m['Deletion_AUC']:.3f} (random {m['Deletion_AUC_random']:.3f})  "
        f"insertion {m['Insertion_AUC']:.3f} (random {m['Insertion_AUC_random']:.3f})  MuFidelity {m['MuFidelity']:.3f}"
        for n, m in means.items()
    )
    worse = [
        n for n, m in means.items()
        if not (m["Deletion_AUC"] < m["Deletion_AUC_random"] and m["Insertion_AUC"] > m["Insertion_AUC_random"]
                and m["MuFidelity"] > 0)
    ]
    assert not worse, f"maps that do not mean 'positive = evidence for the class': {worse}\n{table}"


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mc_rise_maps_are_negated_and_the_sign_is_recorded(make_cfg):
    from sklearn.neural_network import MLPClassifier

    from xaitk_exp.data import Digits
    from xaitk_exp.models.blackbox import SklearnBlackbox
    from xaitk_exp.settings.nodes import to_dict
    from xaitk_exp.stages.saliency.algorithm import Algorithm

    split = Digits().load()
    model = MLPClassifier(hidden_layer_sizes=[20], max_iter=20, random_state=0).fit(
        split.train_images.reshape(len(split.train_images), -1), split.train_labels
    )
    image = split.test_images[0]
    cfg = make_cfg("saliency=mc_rise", "saliency.n=50")
    algo = Algorithm(cfg.saliency, split.image_shape)
    assert algo.sign == -1 and algo.config()["sign"] == -1
    raw = np.asarray(algo.generator(algo.prepare(image), SklearnBlackbox(model)))
    assert np.array_equal(algo.compute(image, SklearnBlackbox(model)), -raw)
    # a config recorded before the key existed keeps the generator's own sign, and records no 'sign' param
    old = {k: v for k, v in to_dict(cfg.saliency).items() if k != "sign"}
    before = Algorithm(old, split.image_shape)
    assert before.sign == 1 and "sign" not in before.config()
    assert np.array_equal(before.compute(image, SklearnBlackbox(model)), raw)
    # the others need no sign: their scorers already give positive = evidence for the class
    for name in SHIPPED:
        if name != "mc_rise":
            assert "sign" not in make_cfg(f"saliency={name}").saliency, name


@pytest.mark.parametrize("value", [2, 0, "minus", True])
def test_a_sign_other_than_plus_or_minus_one_is_refused(make_cfg, value):
    from xaitk_exp.errors import ConfigError
    from xaitk_exp.settings.validate import validate

    cfg = make_cfg("saliency=mc_rise", f"saliency.sign={str(value).lower()}")
    with pytest.raises(ConfigError, match=r"saliency\.sign.*1 or -1"):
        validate(cfg)


def test_the_picture_says_what_red_and_blue_mean(tmp_path):
    from PIL import Image

    from xaitk_exp.viz.figures import BLUE, LEGEND, PAD, RED, saliency_figure

    assert LEGEND == "red = evidence for the class (raises its confidence), blue = against"
    maps = np.linspace(-1, 1, 3 * 8 * 8).reshape(3, 8, 8)
    path = saliency_figure(np.zeros((8, 8)), maps, ["a", "b", "c"], 0, tmp_path / "f.png", "title")
    rgb = np.asarray(Image.open(path).convert("RGB"))
    legend_row = rgb[-12:]  # the swatches sit in the last row, left
    assert (legend_row[:, PAD : PAD + 9] == RED).all(axis=-1).any()
    assert (legend_row[:, PAD + 12 : PAD + 21] == BLUE).all(axis=-1).any()
