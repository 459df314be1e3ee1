"""The built-in models: quality on the built-in samples, and the figures stored in their files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tiled_unet import builtin_models, load_model, segment
from tiled_unet.metrics import match
from tiled_unet.synthetic import sample

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_builtin_models.py"
NAMES = [name for name in ("nuclei-2d", "nuclei-3d") if name in builtin_models()]


def training_script():
    spec = importlib.util.spec_from_file_location("train_builtin_models", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", NAMES)
def test_builtin_model_segments_its_sample(name):
    image, truth = sample(name)
    stats = match(segment(image, name, device="cpu"), truth, 0.5)
    assert stats.ap >= 0.9, stats
    stored = load_model(name).model_config.training["sample"]
    assert stats.ap == pytest.approx(stored["ap50"], abs=0.02)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.endswith("3d") else n for n in NAMES])
def test_stored_held_out_figures_are_reproduced(name):
    """The held-out AP@0.5 in the model file (and the README) is what the model gives on those images."""
    script = training_script()
    net = load_model(name)
    recipe = script.RECIPES[name]
    images, labels = script.images(recipe, recipe["held_out"], script.TEST_SEED)
    measured = script.score(net, images, labels, net.model_config.instances)
    stored = net.model_config.training["test"]
    assert measured["cells"] == stored["cells"]
    assert measured["ap50"] == pytest.approx(stored["ap50"], abs=0.01)
