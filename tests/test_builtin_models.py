"""The built-in models: quality on the built-in samples, and the figures stored in their files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tiled_unet import builtin_models, load_model, segment
from tiled_unet.metrics import match
from tiled_unet.synthetic import sample

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_builtin_models.py"
NAMES = ["nuclei-2d", "nuclei-3d"]


def test_trained_models_ship_with_the_package():
    assert set(NAMES) <= set(builtin_models())
    for name in NAMES:
        net = load_model(name)
        assert net.model_config.name == name and net.model_config.training.get("sample"), name


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
    # float32 convolutions round differently on different CPUs (oneDNN kernels), which can move one
    # borderline cell across IoU 0.5: a change of about 2 / cells in AP
    assert stats.ap == pytest.approx(stored["ap50"], abs=2.0 / stored["cells"])


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


def test_training_script_resumes_a_run_and_retunes_with_the_models_own_recipe(tmp_path, capsys):
    """--resume continues from --checkpoints to the recipe's last epoch (patches made on the device, here the
    CPU); --retune reports the data the model was trained on (its stored recipe), not the script's defaults."""
    script = training_script()
    tiny = ["nuclei-2d", "--images", "3", "--steps", "1", "--set", "depth=1", "base_channels=4", "batch=1",
            "patch=[16,16]", "held_out=1", "augment_on=device", "--train-only", "--checkpoints", str(tmp_path / "ck"),
            "--out", str(tmp_path)]
    assert script.main([*tiny, "--epochs", "1"]) == 0
    first = load_model(tmp_path / "nuclei-2d.safetensors").model_config.training
    assert [h["epoch"] for h in first["history"]] == [1]
    assert script.main([*tiny, "--epochs", "2", "--resume"]) == 0
    resumed = load_model(tmp_path / "nuclei-2d.safetensors").model_config.training
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["history"][0] == first["history"][0]
    assert "--resume" in resumed["command"] and resumed["recipe"]["images"] == 3
    assert resumed["config"]["augment_on"] == "device" and resumed["config"]["workers"] == 0  # not the recipe's 3
    with pytest.raises(SystemExit):
        script.main(["nuclei-2d", "--resume", "--out", str(tmp_path)])
    assert "--resume needs --checkpoints" in capsys.readouterr().err
    assert script.main(["nuclei-2d", "--retune", str(tmp_path / "nuclei-2d.safetensors"),
                        "--out", str(tmp_path / "tuned")]) == 0
    tuned = load_model(tmp_path / "tuned" / "nuclei-2d.safetensors").model_config.training
    assert tuned["data"].startswith("3 synthetic images") and tuned["test"]["cells"] > 0


def test_training_script_interrupted_writes_the_kept_weights_with_their_recipe_and_command(tmp_path, monkeypatch):
    script = training_script()
    real_train = script.train

    def interrupted_after_first_epoch(*args, progress, **kwargs):
        def stop(event):
            progress(event)
            if event.kind == "epoch":
                raise KeyboardInterrupt

        return real_train(*args, progress=stop, **kwargs)

    monkeypatch.setattr(script, "train", interrupted_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        script.main(["nuclei-2d", "--images", "3", "--steps", "1", "--epochs", "3", "--set", "depth=1",
                     "base_channels=4", "batch=1", "patch=[16,16]", "held_out=1", "--train-only",
                     "--out", str(tmp_path)])
    training = load_model(tmp_path / "nuclei-2d.safetensors").model_config.training
    assert training["interrupted"] is True and training["epochs_run"] == 1
    assert training["recipe"]["epochs"] == 3 and "--epochs 3" in training["command"]


def test_training_script_fine_tunes_from_a_model_file_and_records_it(tmp_path, capsys):
    script = training_script()
    settings = ["depth=1", "batch=1", "patch=[16,16]", "held_out=1", "precision=bfloat16"]
    tiny = ["nuclei-2d", "--images", "3", "--steps", "1", "--epochs", "1", "--train-only", "--set", *settings,
            "base_channels=4"]
    assert script.main([*tiny, "--out", str(tmp_path / "first")]) == 0
    first = tmp_path / "first" / "nuclei-2d.safetensors"
    more = [*tiny[:2], "4", *tiny[3:]]  # 4 training images, where the starting model had 3
    assert script.main([*more, "--init", str(first), "--out", str(tmp_path / "tuned"),
                        "--checkpoints", str(tmp_path / "ck")]) == 0
    tuned = load_model(tmp_path / "tuned" / "nuclei-2d.safetensors")
    assert tuned.model_config.training["init"]["file"] == str(first)
    assert tuned.model_config.training["recipe"]["images"] == 4
    # the checkpoints say how they were made too, so --retune of one reads this run's recipe
    checkpoint = load_model(tmp_path / "ck" / "last.safetensors").model_config.training
    assert checkpoint["checkpoint"] == "last" and checkpoint["recipe"]["images"] == 4
    assert checkpoint["init"]["file"] == str(first) and checkpoint["history"] == tuned.model_config.training["history"]
    assert tuned.model_config.training["init"]["training"] == load_model(first).model_config.training
    assert tuned.model_config.training["config"]["precision"] == "bfloat16"
    before, after = load_model(first).state_dict(), tuned.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained on from there
    fresh = load_model(tmp_path / "first" / "nuclei-2d.safetensors")
    assert fresh.model_config.training.get("init") is None
    with pytest.raises(SystemExit, match="is not the recipe's"):
        script.main([*tiny[:-1], "base_channels=8", "--init", str(first), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit):
        script.main(["nuclei-2d", "--init", str(first), "--retune", str(first), "--out", str(tmp_path / "x")])
    assert "--init starts a training run" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # it would overwrite the model it starts from
        script.main([*tiny, "--init", str(first), "--out", str(tmp_path / "first")])
    assert "is the file this run writes" in capsys.readouterr().err
    assert load_model(first).model_config.training.get("init") is None
