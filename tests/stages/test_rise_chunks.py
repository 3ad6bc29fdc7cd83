"""RISE and MC-RISE a chunk of masks at a time (:mod:`xaitk_exp.stages.saliency.rise`): the maps xaitk-saliency's own
stacks give, bit for bit, for any chunk size, with memory bounded by the chunk instead of masks x image size."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))

RISE = "xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise.RISEStack"


@pytest.fixture(scope="module")
def digits_model():
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    bunch = load_digits()
    images = bunch.images / 16.0
    model = MLPClassifier(hidden_layer_sizes=[20], max_iter=30, random_state=0)
    return model.fit(images[:500].reshape(500, -1), bunch.target[:500]), images[600:]


@pytest.fixture(scope="module")
def colour_cnn(tmp_path_factory):
    """The model zoo's small CNN as ONNX, with seeded random weights (no training: only the maps' equality
    matters), and colour digits ``[32, 32, 3]``."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import model_zoo

    rng = np.random.default_rng(0)
    shapes = {"conv1.weight": (8, 3, 3, 3), "conv1.bias": (8,), "conv2.weight": (16, 8, 3, 3), "conv2.bias": (16,),
              "fc.weight": (10, 64), "fc.bias": (10,)}
    weights = {k: rng.normal(0, 0.5, size=s).astype(np.float32) for k, s in shapes.items()}
    path = model_zoo.cnn_onnx(weights, tmp_path_factory.mktemp("cnn") / "cnn.onnx")
    images, _ = model_zoo.colour_digits(n=4, seed=1)
    return str(path), images


def _algorithm(make_cfg, *overrides, shape=(8, 8)):
    from xaitk_exp.stages.saliency.algorithm import Algorithm

    return Algorithm(make_cfg(*overrides).saliency, shape)


@pytest.mark.parametrize("chunk", [1, 7, 64, 300, 512])
def test_rise_maps_equal_rise_stack_bit_for_bit(make_cfg, digits_model, chunk):
    """Chunks that divide n (1, 300), that do not (7, 64), and larger than n (512); the shipped RISE config."""
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise import RISEStack

    from xaitk_exp.models.blackbox import SklearnBlackbox

    model, images = digits_model
    algo = _algorithm(make_cfg, "saliency=rise", "saliency.n=300", "seed=7")
    direct = RISEStack(n=300, s=4, p1=0.5, seed=7, threads=0, debiased=True)
    direct.fill = 0
    for image in images[:2]:  # the second image reuses the first one's shifts
        expected = direct(image, SklearnBlackbox(model, chunk))
        bb = SklearnBlackbox(model, chunk)
        maps = algo.compute(image, bb)
        assert maps.dtype == expected.dtype and np.array_equal(maps, expected)
        assert bb.n_calls == 1 + -(-300 // chunk)  # the reference image, then one model call per chunk


def test_rise_built_from_its_parts_and_not_debiased(make_cfg, digits_model):
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise import RISEStack

    from xaitk_exp.models.blackbox import SklearnBlackbox

    model, images = digits_model
    parts = _algorithm(make_cfg, "saliency=rise_grid_occlusion", "saliency.perturber.n=200", "seed=3")
    assert parts._chunked is not None
    np.testing.assert_array_equal(
        parts.compute(images[0], SklearnBlackbox(model, 50)), parts.generator(images[0], SklearnBlackbox(model, 50))
    )
    plain = _algorithm(make_cfg, "saliency=rise", "saliency.n=200", "saliency.debiased=false", "saliency.s=3")
    direct = RISEStack(n=200, s=3, p1=0.5, seed=0, threads=0, debiased=False)
    direct.fill = 0
    np.testing.assert_array_equal(plain.compute(images[0], SklearnBlackbox(model, 33)),
                                  direct(images[0], SklearnBlackbox(model, 33)))


def test_threads_give_the_single_threaded_maps(make_cfg, digits_model):
    """xaitk-saliency's threads draw the shifts in whichever order they run; here always in mask order."""
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise import RISEStack

    from xaitk_exp.models.blackbox import SklearnBlackbox

    model, images = digits_model
    algo = _algorithm(make_cfg, "saliency=rise", "saliency.n=120", "saliency.threads=2", "seed=9")
    direct = RISEStack(n=120, s=4, p1=0.5, seed=9, threads=0)
    direct.fill = 0
    np.testing.assert_array_equal(algo.compute(images[1], SklearnBlackbox(model, 50)),
                                  direct(images[1], SklearnBlackbox(model, 50)))


@pytest.mark.parametrize("colours", [[[0], [1]], [[0], [1], [0.5]]])
def test_mc_rise_maps_equal_mc_rise_stack_bit_for_bit(make_cfg, digits_model, colours):
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.mc_rise import MCRISEStack

    from xaitk_exp.models.blackbox import SklearnBlackbox

    model, images = digits_model
    text = "[" + ",".join(f"[{c[0]}]" for c in colours) + "]"
    algo = _algorithm(make_cfg, "saliency=mc_rise", "saliency.n=150", f"saliency.fill_colors={text}", "seed=5")
    direct = MCRISEStack(n=150, s=4, p1=0.5, fill_colors=colours, seed=5, threads=0)
    expected = -direct(images[0][..., None], SklearnBlackbox(model, 40))  # the stage's sign: -1
    maps = algo.compute(images[0], SklearnBlackbox(model, 40))
    assert maps.shape == (len(colours), 10, 8, 8)
    np.testing.assert_array_equal(maps, expected)


@pytest.mark.parametrize("chunk", [16, 37])
def test_colour_image_and_image_model(make_cfg, colour_cnn, chunk):
    """A colour ``[32, 32, 3]`` float32 image through the ONNX black box: RISE and MC-RISE with RGB fills."""
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.mc_rise import MCRISEStack
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise import RISEStack

    from xaitk_exp.models.blackbox import blackbox_for
    from xaitk_exp.models.sources import build_image_model
    from xaitk_exp.settings.nodes import to_dict

    path, images = colour_cnn
    cfg = make_cfg("model=onnx", f"model.path={path}")
    model = build_image_model(to_dict(cfg.model), list(cfg.allow_targets))
    model.check_images((32, 32, 3))
    image = images[3]
    algo = _algorithm(make_cfg, "saliency=rise", "saliency.n=100", "seed=2", "saliency.s=4", "saliency.fill=0",
                      shape=image.shape)
    direct = RISEStack(n=100, s=4, p1=0.5, seed=2, threads=0)
    direct.fill = 0
    expected = direct(image, blackbox_for(model, chunk))
    np.testing.assert_array_equal(algo.compute(image, blackbox_for(model, chunk)), expected)
    colours = [[0, 0, 0], [1, 1, 1], [1, 0, 0]]
    mc = _algorithm(make_cfg, "saliency=mc_rise", "saliency.n=60", "saliency.fill_colors=[[0,0,0],[1,1,1],[1,0,0]]",
                    "saliency.s=5", shape=image.shape)
    direct = MCRISEStack(n=60, s=5, p1=0.5, fill_colors=colours, seed=0, threads=0)
    expected = -direct(image, blackbox_for(model, chunk))
    np.testing.assert_array_equal(mc.compute(image, blackbox_for(model, chunk)), expected)


@pytest.mark.parametrize(("hw", "s"), [((8, 8), 4), ((30, 17), 3), ((64, 48), 8), ((9, 9), 9), ((100, 100), 7)])
def test_the_upsampling_lookup_equals_skimage(hw, s):
    """Sizes a cell does and does not divide, non-square images, one cell per pixel: the lookup's masks are
    skimage's (``Upsampler._resized`` is RISEGrid's resize-and-crop, mask by mask)."""
    from xaitk_saliency.impls.perturb_image.rise import RISEGrid

    from xaitk_exp.stages.saliency.rise import _ShiftedMasks

    grid = RISEGrid(n=120, s=s, p1=0.5, seed=1, threads=0)
    up, shifts = _ShiftedMasks(grid, grid.grid).for_size(hw)
    assert up.table is not None
    np.testing.assert_array_equal(up.draw(grid.grid, shifts), grid.perturb(np.zeros(hw)))
    all_on = np.ones((3, s, s), np.float32)  # a constant grid: skimage clips to its single value
    np.testing.assert_array_equal(up.draw(all_on, shifts[:3]), up._resized(all_on, shifts[:3]))


def test_unseeded_rise_draws_fresh_shifts_per_image(make_cfg, digits_model):
    from xaitk_exp.models.blackbox import SklearnBlackbox

    model, images = digits_model
    algo = _algorithm(make_cfg, "saliency=rise", "saliency.n=100", "seed=null")
    a, b = (algo.compute(images[0], SklearnBlackbox(model, 32)) for _ in range(2))
    assert a.shape == (10, 8, 8) and np.abs(a).max() <= 1 and not np.array_equal(a, b)


def test_the_recorded_config_is_the_generators(make_cfg):
    algo = _algorithm(make_cfg, "saliency=rise", "seed=4")
    assert algo.config() == {**algo.generator.get_config(), "fill": 0, "algorithm": "rise", "class": RISE,
                             "auto_settings": "s,fill"}  # the settings that followed the image (8x8: s 4, fill 0)
    assert "perturb" not in vars(algo.generator._po._perturber)  # the generator is left as built


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]  # numpy reports its arrays to tracemalloc
    finally:
        tracemalloc.stop()


def test_peak_memory_is_bounded_by_the_chunk_not_by_the_masks(make_cfg):
    """2000 masks of 64x64: xaitk-saliency holds them all (float32, then float64 copies: ~100 MB); a chunk of 32
    needs about 2 MB. The bound, half of n x H x W bytes, fails for any [n, H, W] array, even of bytes."""
    from sklearn.linear_model import LogisticRegression
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise import RISEStack

    from xaitk_exp.models.blackbox import SklearnBlackbox

    n, size = 2000, 64
    rng = np.random.default_rng(0)
    train = rng.uniform(size=(20, size * size)).astype(np.float32)
    model = LogisticRegression(max_iter=50).fit(train, np.arange(20) % 2)
    image = train[0].reshape(size, size)
    algo = _algorithm(make_cfg, "saliency=rise", f"saliency.n={n}", shape=(size, size))
    algo.compute(image, SklearnBlackbox(model, 32))  # the per-size lookup table is built outside the measurement
    bound = n * size * size
    chunked = _peak(lambda: algo.compute(image, SklearnBlackbox(model, 32)))
    assert chunked < bound / 2, f"peak {chunked / 1e6:.1f} MB"
    direct = RISEStack(n=n, s=4, p1=0.5, seed=0, threads=0)
    direct.fill = 0
    assert _peak(lambda: direct(image, SklearnBlackbox(model, 32))) > 4 * bound  # what the bound catches
