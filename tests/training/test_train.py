"""Training loop: events, reproducibility, checkpoints and resume, cancel, fine-tuning, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import tiled_unet
from tiled_unet.cli.main import main
from tiled_unet.synthetic import nuclei
from tiled_unet.training.loop import TrainConfig, new_model, train, train_iter

FAST = dict(epochs=2, steps_per_epoch=3, batch_size=2, patch_shape=(32, 32), device="cpu")


@pytest.fixture(scope="module")
def pairs():
    data = [nuclei((96, 96), count=10, seed=s) for s in range(3)]
    return [d[0] for d in data], [d[1] for d in data]


def small_model(**kwargs):
    torch.manual_seed(0)
    return new_model(2, depth=2, base_channels=4, **kwargs)


def weights_of(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_events_and_summary(pairs):
    events = []
    net = train(*pairs, init=small_model(), progress=events.append, **FAST)
    kinds = [e.kind for e in events]
    assert kinds.count("step") == 6 and kinds.count("epoch") == 2
    epoch_events = [e for e in events if e.kind == "epoch"]
    assert all(e.val_ap is not None and 0 <= e.val_ap <= 1 for e in epoch_events)
    assert all(np.isfinite(e.loss) for e in events)
    summary = net.model_config.training
    assert summary["epochs_run"] == 2 and summary["train_images"] == 2 and summary["val_images"] == 1
    assert summary["config"]["w0"] == 10.0 and not net.training


def test_instance_thresholds_tuned_on_the_validation_images(pairs):
    from tiled_unet.training.validation import FOREGROUND_THRESHOLDS, SEED_THRESHOLDS, tune_instance_thresholds

    net = train(*pairs, init=small_model(), min_tuning_cells=0, **FAST)
    tuned = net.model_config.training["tuned_instances"]
    chosen = net.model_config.instances
    assert (chosen.seed_threshold, chosen.foreground_threshold) == (tuned["seed_threshold"],
                                                                     tuned["foreground_threshold"])
    assert chosen.seed_threshold in SEED_THRESHOLDS and chosen.foreground_threshold in FOREGROUND_THRESHOLDS
    # the chosen pair is the best of the grid on the validation image (the last of the three)
    image, labels = pairs[0][-1][None].astype(np.float32), pairs[1][-1]
    again, ap = tune_instance_thresholds(net, [(image, labels)])
    assert again == chosen and ap == pytest.approx(tuned["val_ap50"])
    untuned = train(*pairs, init=small_model(), tune_instances=False, **FAST)
    assert untuned.model_config.training["tuned_instances"] is None
    assert untuned.model_config.instances == small_model().model_config.instances


def test_too_few_validation_cells_keep_the_starting_models_instance_parameters(pairs):
    import dataclasses

    init = small_model()
    init.model_config = dataclasses.replace(
        init.model_config, instances=dataclasses.replace(init.model_config.instances, seed_threshold=0.95,
                                                         foreground_threshold=0.15))
    net = train(*pairs, init=init, min_tuning_cells=11, **FAST)  # the validation image holds 10 cells
    assert net.model_config.instances == init.model_config.instances
    assert "cells, fewer than min_tuning_cells=11" in net.model_config.training["tuned_instances"]["skipped"]
    tuned = train(*pairs, init=init, min_tuning_cells=0, **FAST)
    assert tuned.model_config.instances != init.model_config.instances
    with pytest.raises(ValueError, match="min_tuning_cells"):
        TrainConfig(min_tuning_cells=-1)


def test_epochs_are_compared_by_validation_loss_when_there_are_too_few_cells(pairs):
    options = dict(FAST, epochs=5, steps_per_epoch=8, learning_rate=3e-3, keep="best", tune_instances=False)
    by_loss = train(*pairs, init=small_model(), min_tuning_cells=11, **options).model_config.training
    history = by_loss["history"]
    assert by_loss["selected_by"] == "validation loss"
    assert all(h["val_loss"] > 0 and h["val_ap"] is not None for h in history)
    assert by_loss["best_epoch"] == min(history, key=lambda h: h["val_loss"])["epoch"]
    assert by_loss["best_val_ap50"] == history[by_loss["best_epoch"] - 1]["val_ap"]
    by_ap = train(*pairs, init=small_model(), min_tuning_cells=0, **options).model_config.training
    assert by_ap["selected_by"] == "validation AP@0.5"
    assert by_ap["best_val_ap50"] == max(h["val_ap"] for h in by_ap["history"])
    assert by_ap["best_epoch"] == next(h["epoch"] for h in by_ap["history"] if h["val_ap"] == by_ap["best_val_ap50"])
    assert by_ap["best_epoch"] != by_loss["best_epoch"]  # here the two rules choose differently


def test_a_two_level_seed_rule_is_tuned_with_or_without_its_low_threshold(pairs):
    """Fine-tuning a model with seed_low_threshold: the grid skips seed thresholds not above it
    (no invalid InstanceConfig) and weighs the rule against one threshold on the validation image."""
    import dataclasses

    from tiled_unet.training.validation import SEED_THRESHOLDS, tune_instance_thresholds

    init = small_model()
    init.model_config = dataclasses.replace(
        init.model_config, instances=dataclasses.replace(init.model_config.instances, seed_low_threshold=0.5))
    net = train(*pairs, init=init, min_tuning_cells=0, **FAST)
    chosen, tuned = net.model_config.instances, net.model_config.training["tuned_instances"]
    assert chosen.seed_low_threshold in (0.0, 0.5) and tuned["seed_low_threshold"] == chosen.seed_low_threshold
    assert chosen.seed_low_threshold < chosen.seed_threshold in SEED_THRESHOLDS
    image, labels = pairs[0][-1][None].astype(np.float32), pairs[1][-1]
    grid = {"seed_threshold": SEED_THRESHOLDS, "seed_low_threshold": (0.5,)}
    two_level, _ = tune_instance_thresholds(net, [(image, labels)], grid=grid)
    assert two_level.seed_low_threshold == 0.5 and two_level.seed_threshold in (0.6, 0.7, 0.8)


def test_same_seed_same_weights(pairs):
    a = train(*pairs, init=small_model(), **FAST)
    b = train(*pairs, init=small_model(), **FAST)
    for key, value in weights_of(a).items():
        torch.testing.assert_close(value, weights_of(b)[key], rtol=0, atol=0)


def test_patch_workers_give_the_same_weights_for_any_number_and_type_of_workers(pairs):
    one = train(*pairs, init=small_model(), workers=1, **FAST)
    three = train(*pairs, init=small_model(), workers=3, **FAST)
    processes = train(*pairs, init=small_model(), workers=2, worker_type="processes", **FAST)
    for key, value in weights_of(one).items():
        torch.testing.assert_close(value, weights_of(three)[key], rtol=0, atol=0)
        torch.testing.assert_close(value, weights_of(processes)[key], rtol=0, atol=0)
    inline = train(*pairs, init=small_model(), **FAST)  # workers=0 draws other patches
    assert any(not torch.equal(value, weights_of(inline)[key]) for key, value in weights_of(one).items())


def test_worker_processes_share_the_data_as_files_removed_on_close(pairs):
    from tiled_unet.training.augment import AugmentConfig
    from tiled_unet.training.datasets import PatchStream, prepare

    net = small_model()
    examples = [prepare(image[None], labels, net.model_config, w0=10, sigma=5, boundary_width=2, ignore_label=None,
                        spacing=None, rng=np.random.default_rng(0)) for image, labels in zip(*pairs)]
    batches = {}
    for kind in ("threads", "processes"):
        stream = PatchStream(examples, (44, 44), (4, 4), 0.7, AugmentConfig(), np.random.default_rng(1), 2, kind)
        batches[kind] = list(stream.epoch(2, 2))
        if kind == "processes":
            folder = Path(stream._shared.name)
            assert len(list(folder.glob("*.npy"))) == 4 * len(examples)
        stream.close()
    assert not folder.exists()
    for a, b in zip(sum(batches["threads"], []), sum(batches["processes"], [])):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_prepare_all_in_threads_equals_prepare_in_order(pairs):
    from tiled_unet.training.datasets import prepare, prepare_all

    net = small_model()
    big = [nuclei((512, 512), count=600, radius=(10, 14), seed=s) for s in range(2)]
    data = [(image[None], labels) for image, labels in zip(*pairs)] + [(i[None], l) for i, l in big]
    assert sum((labels > 0).sum() > 100_000 for _, labels in data) == 2  # these draw from the rng
    options = dict(w0=10, sigma=5, boundary_width=2, ignore_label=None, spacing=None)
    serial_rng, threaded_rng = np.random.default_rng(3), np.random.default_rng(3)
    serial = [prepare(image, labels, net.model_config, rng=serial_rng, **options) for image, labels in data]
    threaded = prepare_all(data, net.model_config, rng=threaded_rng, threads=3, **options)
    assert len(threaded) == len(serial)
    for a, b in zip(serial, threaded):
        for field in ("image", "labels", "targets", "weights", "foreground", "raw"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert serial_rng.integers(1 << 30) == threaded_rng.integers(1 << 30)
    assert len(serial[-1].foreground) == 100_000
    with pytest.raises(ValueError, match="threads must be >= 1"):
        prepare_all(data, net.model_config, rng=threaded_rng, threads=0, **options)


def test_patch_stream_batches_and_errors(pairs):
    from tiled_unet.training.datasets import PatchStream, prepare

    net = small_model()
    examples = [prepare(i[None].astype(np.float32), l, net.model_config, w0=10, sigma=5, boundary_width=2,
                        ignore_label=None, spacing=None, rng=np.random.default_rng(0)) for i, l in zip(*pairs)]
    stream = PatchStream(examples, (40, 40), (12, 12), 0.7, None, np.random.default_rng(1), workers=2)
    batches = list(stream.epoch(3, 2))
    assert len(batches) == 3 and all(len(b) == 2 for b in batches)
    assert batches[0][0][0].shape == (1, 40, 40) and batches[0][0][1].shape == (12, 12)
    stream.close()
    broken = PatchStream(examples, (40, 40), (12, 12), 0.7, "not a config", np.random.default_rng(1), workers=2)
    with pytest.raises(TypeError, match="config must be an AugmentConfig"):  # a worker's error reaches the loop
        next(broken.epoch(1, 2))
    broken.close()
    with pytest.raises(ValueError, match="workers must be an integer >= 0"):
        TrainConfig(workers=-1)
    with pytest.raises(ValueError, match="worker_type must be 'threads' or 'processes'"):
        TrainConfig(worker_type="fork")


@pytest.mark.parametrize("workers, augment_on", [(0, "cpu"), (2, "cpu"), (0, "device")])
def test_resume_equals_uninterrupted_run(pairs, tmp_path, workers, augment_on):
    full = train(*pairs, init=small_model(), checkpoint_dir=tmp_path / "full", validation_fraction=0.0,
                 patience=10, workers=workers, augment_on=augment_on, **FAST)
    options = {**FAST, "epochs": 1, "workers": workers, "augment_on": augment_on}
    train(*pairs, init=small_model(), checkpoint_dir=tmp_path / "part", validation_fraction=0.0, **options)
    resumed = train(*pairs, init=small_model(), checkpoint_dir=tmp_path / "part", resume=True,
                    validation_fraction=0.0, workers=workers, augment_on=augment_on, **FAST)
    last_full = tiled_unet.load_model(tmp_path / "full" / "last.safetensors")
    last_resumed = tiled_unet.load_model(tmp_path / "part" / "last.safetensors")
    for key, value in weights_of(last_full).items():
        torch.testing.assert_close(value, weights_of(last_resumed)[key])
    assert resumed.model_config.training["epochs_run"] == 2 and full.model_config.training["epochs_run"] == 2


def test_checkpoint_model_files_carry_this_runs_summary_not_the_starting_models(pairs, tmp_path):
    import dataclasses

    start = small_model()
    start.model_config = dataclasses.replace(start.model_config, name="old", training={"train_images": 99})
    train(*pairs, init=start, checkpoint_dir=tmp_path, name="mine", provenance={"recipe": {"images": 3}},
          **{**FAST, "epochs": 2, "patience": 10})
    for which in ("last", "best"):
        config = tiled_unet.load_model(tmp_path / f"{which}.safetensors").model_config
        assert config.name == "mine" and config.training["checkpoint"] == which
        assert config.training["train_images"] == 2 and config.training["recipe"] == {"images": 3}
        assert [h["epoch"] for h in config.training["history"]] == [1, 2]
    with pytest.raises(ValueError, match=r"may not replace the training summary's own entries \['history'\]"):
        next(train_iter(*pairs, init=start, provenance={"history": []}, **FAST))
    with pytest.raises(TypeError, match="provenance must be JSON-able"):
        next(train_iter(*pairs, init=start, provenance={"when": object()}, **FAST))


def test_cancel_keeps_the_best_model(pairs, tmp_path):
    out = tmp_path / "model.safetensors"
    gen = train_iter(*pairs, init=small_model(), out=out, **{**FAST, "epochs": 5})
    for event in gen:
        if event.kind == "epoch":
            break
    gen.close()
    saved = tiled_unet.load_model(out)
    assert saved.model_config.training["epochs_run"] == 1
    image = pairs[0][0]
    np.testing.assert_array_equal(tiled_unet.predict(image, saved, device="cpu"),
                                  tiled_unet.predict(image, tiled_unet.load_model(out), device="cpu"))


def test_fine_tuning_starts_from_the_given_weights(pairs):
    init = small_model()
    tuned = train(*pairs, init=init, **{**FAST, "epochs": 1, "learning_rate": 1e-9})
    for key, value in weights_of(init).items():
        if value.dtype.is_floating_point and "running" not in key:
            torch.testing.assert_close(value, weights_of(tuned)[key], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="classes"):
        train(*pairs, init="placeholder-2d", **FAST)


def test_bad_inputs(pairs):
    images, labels = pairs
    with pytest.raises(ValueError, match="same positive number"):
        train(images, labels[:2], **FAST)
    with pytest.raises(ValueError, match="labels have shape"):
        train([images[0]], [labels[0][:50]], **FAST)
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="integer label image"):
        train([images[0]], [labels[0] + 0.5], **FAST)


def test_ignore_label_pixels_do_not_count(pairs):
    images, labels = pairs
    marked = [np.where(np.arange(96)[None, :] > 60, 999, lab).astype(np.int64) for lab in labels]
    net = train(images, marked, init=small_model(), ignore_label=999, **FAST)
    assert net.model_config.training["config"]["ignore_label"] == 999


def test_cli_train_writes_a_model(pairs, tmp_path, capsys):
    images, labels = pairs
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for k, (image, label) in enumerate(zip(images, labels)):
        tifffile.imwrite(tmp_path / "img" / f"cell{k}.tif", image)
        tifffile.imwrite(tmp_path / "lab" / f"cell{k}.tif", label)
    out = tmp_path / "mine.safetensors"
    code = main(["train", "--images", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"), "-o", str(out),
                 "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "1", "--patch", "32", "32",
                 "--device", "cpu", "--keep", "last", "--augment-on", "device", "--precision", "bfloat16"])
    assert code == 0 and out.is_file()
    written = tiled_unet.load_model(out).model_config
    assert written.name == "mine" and written.training["config"]["keep"] == "last"
    assert written.training["config"]["augment_on"] == "device"
    assert written.training["config"]["precision"] == "bfloat16"
    assert main(["train", "--images", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"), "-o",
                 str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_paper_two_class_targets_train_and_segment(pairs, tmp_path):
    net = train(*pairs, init=small_model(targets="gaps"), out=tmp_path / "gaps.safetensors", **FAST)
    assert net.model_config.class_names == ("background", "cell") and net.config.num_classes == 2
    loaded = tiled_unet.load_model(tmp_path / "gaps.safetensors")
    labels = tiled_unet.segment(pairs[0][0], loaded, device="cpu")
    assert labels.shape == pairs[0][0].shape and labels.dtype == np.uint32
    again = train(*pairs, init=tmp_path / "gaps.safetensors", **FAST)  # fine-tuning keeps the classes
    assert again.config.num_classes == 2
    with pytest.raises(ValueError, match="'boundary' or 'gaps'"):
        new_model(2, targets="edges")


def test_keep_best_or_last_epoch_and_resume_keeps_the_stored_best(pairs, tmp_path):
    from tiled_unet.weights import save_model

    options = {**FAST, "epochs": 3, "patience": 10}
    best = train(*pairs, init=small_model(), checkpoint_dir=tmp_path / "best", **options)
    last = train(*pairs, init=small_model(), checkpoint_dir=tmp_path / "last", keep="last", **options)
    for kept, folder, name in ((best, "best", "best"), (last, "last", "last")):
        stored = weights_of(tiled_unet.load_model(tmp_path / folder / f"{name}.safetensors"))
        for key, value in weights_of(kept).items():
            torch.testing.assert_close(value, stored[key], rtol=0, atol=0)
    assert last.model_config.training["config"]["keep"] == "last"
    best_file, last_file = (weights_of(tiled_unet.load_model(tmp_path / "last" / f"{n}.safetensors")) for n in
                            ("best", "last"))
    assert any(not torch.equal(best_file[k], last_file[k]) for k in best_file)  # so the choice shows above
    # a resumed run returns the best weights saved before the stop, not the last ones
    other = small_model()
    torch.manual_seed(1)
    for parameter in other.parameters():
        parameter.data.normal_()
    save_model(other, tmp_path / "best" / "best.safetensors", overwrite=True)
    resumed = train(*pairs, init=small_model(), checkpoint_dir=tmp_path / "best", resume=True, **options)
    for key, value in weights_of(other).items():
        torch.testing.assert_close(weights_of(resumed)[key], value, rtol=0, atol=0)
    with pytest.raises(ValueError, match="keep must be 'best' or 'last'"):
        TrainConfig(keep="final")


def test_an_exception_in_progress_closes_the_generator_first():
    from tiled_unet.events import run_to_end

    order = []

    def events():
        try:
            yield 1
            yield 2
        finally:
            order.append("closed")

    def progress(event):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        try:
            run_to_end(events(), progress)
        finally:
            order.append("raised")
    assert order == ["closed", "raised"]


def test_the_starting_model_file_is_an_input_never_replaced(pairs, tmp_path):
    from tiled_unet.weights import save_model

    start = tmp_path / "start.safetensors"
    save_model(small_model(), start)
    before = start.read_bytes()
    for out, checkpoints in ((start, None), (tmp_path / "new.safetensors", start)):
        with pytest.raises(ValueError, match="is, contains or lies inside the input"):
            train(*pairs, init=str(start), out=out, checkpoint_dir=checkpoints, overwrite=True, **FAST)
    assert start.read_bytes() == before and not (tmp_path / "new.safetensors").exists()
