"""A catalogue of bad inputs, bad options and faults, run as a user would (the CLI in-process, and
the API): each ends in a correct result or one line that says what was wrong, and no file that
existed before is changed (hashed before and after); failures leave no new file behind."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

import tiled_unet
from tiled_unet.cli.main import main, os_error_message
from tiled_unet.io.lock import lock_path
from tiled_unet.synthetic import nuclei

OK = None  # the expected outcome of a case that must succeed


class _Exploit:
    """Unpickling this creates a file: proof that a pickle was (not) executed."""

    def __reduce__(self):
        return (open, ("PWNED", "w"))


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("catalogue")
    image, labels = nuclei((96, 96), count=10, seed=2)
    tifffile.imwrite(root / "a.tif", image)
    tifffile.imwrite(root / "b.tif", image[::-1])
    tifffile.imwrite(root / "labels.tif", labels.astype(np.uint16))
    tifffile.imwrite(root / "zero.tif", np.zeros_like(labels, np.uint16))
    tifffile.imwrite(root / "exists.tif", np.ones((4, 4), np.uint8))
    tifffile.imwrite(root / "p_probabilities.tif", np.ones((4, 4), np.uint8))
    tifffile.imwrite(root / "stack.tif", nuclei((12, 64, 64), count=6, seed=3)[0])
    (root / "junk.tif").write_bytes(b"this is not a TIFF file")
    for name, array in (("a.zarr", image), ("rgb.zarr", np.stack([image] * 3, -1))):
        z = zarr.open_array(str(root / name), mode="w", shape=array.shape, chunks=(48, 48) + array.shape[2:],
                            dtype=array.dtype)
        z[...] = array
    shutil.copytree(root / "a.zarr", root / "corrupt.zarr")
    chunk = next(p for p in sorted((root / "corrupt.zarr").rglob("*")) if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(b"garbage bytes, not a compressed chunk")
    shutil.copytree(root / "a.zarr", root / "truncated.zarr")
    meta = root / "truncated.zarr" / "zarr.json"
    meta.write_text(meta.read_text()[:57])
    zarr.open_array(str(root / "empty.zarr"), mode="w", shape=(96, 96), chunks=(48, 48), dtype="uint16")
    (root / "dir").mkdir()
    tifffile.imwrite(root / "dir" / "c.tif", image)
    tifffile.imwrite(root / "dir" / "c_labels.tif", labels.astype(np.uint16))
    (root / "ck").mkdir()
    (root / "ck" / "last.safetensors").write_bytes(b"another run's checkpoint")
    (root / "hostile.safetensors").write_bytes(pickle.dumps(_Exploit()))
    (root / "exists.safetensors").write_bytes(b"a model file of the user's")
    return root


def _hashes(root: Path) -> dict[str, str]:
    return {os.fspath(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


FAST = ["--device", "cpu", "--diameter", "off"]
TRAIN = ["--epochs", "1", "--device", "cpu"]

CLI_CASES = [
    # (id, argv, expected: None = success or a phrase of the one-line error, new files allowed)
    ("segment-onto-own-tiff", ["segment", "a.tif", "-o", "a.tif"], "lies inside the input", ()),
    ("segment-onto-own-tiff-overwrite", ["segment", "a.tif", "-o", "a.tif", "--overwrite"], "lies inside the input", ()),
    ("segment-onto-own-zarr", ["segment", "a.zarr", "-o", "a.zarr", "--overwrite"], "lies inside the input", ()),
    ("segment-inside-input-zarr", ["segment", "a.zarr", "-o", "a.zarr/labels.zarr"], "lies inside the input", ()),
    ("predict-onto-own-tiff", ["predict", "a.tif", "-o", "a.tif", "--overwrite"], "lies inside the input", ()),
    ("predict-onto-own-zarr", ["predict", "a.zarr", "-o", "a.zarr", "--overwrite"], "lies inside the input", ()),
    ("predict-inside-input-zarr", ["predict", "a.zarr", "-o", "a.zarr/p.zarr"], "lies inside the input", ()),
    ("predict-existing", ["predict", "a.tif", "-o", "exists.tif"], "already exists", ()),
    ("segment-existing-skipped", ["segment", "a.tif", "-o", "exists.tif"], OK, ()),
    ("segment-tiff", ["segment", "a.tif", "-o", "new.tif", *FAST], OK, ("new.tif",)),
    ("segment-probabilities", ["segment", "a.tif", "-o", "n_labels.tif", "--probabilities", *FAST], OK,
     ("n_labels.tif", "n_probabilities.tif")),
    ("probabilities-exist", ["segment", "a.tif", "-o", "p.tif", "--probabilities", *FAST], "already exists", ()),
    ("folder-onto-itself", ["segment", "dir", "-o", "dir", *FAST], OK, ()),
    ("voxel-size-count", ["segment", "a.tif", "-o", "v.tif", "--voxel-size", "1", "1", "1", "1"], "got 4 values", ()),
    ("voxel-size-zero", ["segment", "a.tif", "-o", "v.tif", "--voxel-size", "0", "0.5"], "positive and finite", ()),
    ("voxel-size-nan", ["segment", "a.tif", "-o", "v.tif", "--voxel-size", "nan", "1"], "positive and finite", ()),
    ("voxel-size-negative", ["segment", "a.tif", "-o", "v.tif", "--voxel-size", "-1", "1"], "positive and finite", ()),
    ("voxel-size-inf", ["segment", "a.tif", "-o", "v.tif", "--voxel-size", "inf", "1"], "positive and finite", ()),
    ("tile-shape-count", ["segment", "a.tif", "-o", "t.tif", "--tile-shape", "16,16,16", *FAST], "tile_shape", ()),
    ("tile-shape-words", ["segment", "a.tif", "-o", "t.tif", "--tile-shape", "big", *FAST], "tile", ()),
    ("batch-size-zero", ["segment", "a.tif", "-o", "t.tif", "--batch-size", "0"], "batch", ()),
    ("batch-size-huge", ["segment", "a.tif", "-o", "t.tif", "--batch-size", "100000", *FAST], "batch_size 100000", ()),
    ("device-unknown", ["segment", "a.tif", "-o", "t.tif", "--device", "tpu"], "device", ()),
    ("backend-unknown", ["segment", "a.tif", "-o", "t.tif", "--backend", "tensorrt"], "invalid choice", ()),
    ("model-unknown", ["segment", "a.tif", "-o", "t.tif", "--model", "nosuch"], "nosuch", ()),
    ("model-hostile-pickle", ["segment", "a.tif", "-o", "t.tif", "--model", "hostile.safetensors"], "hostile", ()),
    ("model-not-a-model", ["predict", "a.tif", "-o", "t.tif", "--model", "junk.tif"], "junk.tif", ()),
    ("diameter-negative", ["segment", "a.tif", "-o", "t.tif", "--diameter", "-5"], "diameter", ()),
    ("diameter-word", ["segment", "a.tif", "-o", "t.tif", "--diameter", "big"], "diameter", ()),
    ("diameter-zero", ["segment", "a.tif", "-o", "t.tif", "--diameter", "0"], "diameter", ()),
    ("input-missing", ["segment", "nosuch.tif", "-o", "t.tif"], "no such file", ()),
    ("input-not-tiff", ["segment", "junk.tif", "-o", "t.tif"], "junk.tif", ()),
    ("predict-input-missing", ["predict", "nosuch.tif", "-o", "t.tif"], "no such", ()),
    ("zarr-corrupt-chunk", ["segment", "corrupt.zarr", "-o", "x.zarr", *FAST], "damaged", ()),
    ("zarr-truncated-metadata", ["segment", "truncated.zarr", "-o", "x.zarr"], "metadata", ()),
    ("predict-corrupt-chunk", ["predict", "corrupt.zarr", "-o", "x.tif", *FAST], "damaged", ()),
    ("predict-truncated-metadata", ["predict", "truncated.zarr", "-o", "x.tif"], "metadata", ()),
    ("zarr-nothing-written", ["segment", "empty.zarr", "-o", "e.zarr"], "no data written", ()),
    ("predict-nothing-written", ["predict", "empty.zarr", "-o", "e.tif"], "no data written", ()),
    ("zarr-rgb", ["segment", "rgb.zarr", "-o", "r.zarr"], "RGB", ()),
    ("axes-wrong-count", ["segment", "a.tif", "-o", "q.tif", "--axes", "ZYX"], "axes", ()),
    ("axes-repeated", ["segment", "a.tif", "-o", "q.tif", "--axes", "YY"], "axes", ()),
    ("stack-3d", ["segment", "stack.tif", "-o", "s.tif", *FAST], OK, ("s.tif",)),
    ("two-inputs-one-file", ["segment", "a.tif", "b.tif", "-o", "one.tif"], "names a file", ()),
    ("pattern-matches-nothing", ["segment", "nomatch*.tif", "-o", "d2"], "matches", ()),
    ("no-output", ["segment", "a.tif"], "-o", ()),
    ("no-input", ["segment"], "INPUT", ()),
    ("predict-no-input", ["predict", "-o", "x.tif"], "INPUT", ()),
    ("halo-valid-model", ["segment", "a.tif", "-o", "h.tif", "--halo", "4", *FAST], "halo", ()),
    ("sample-onto-existing", ["segment", "--sample", "nuclei-2d", "-o", "exists.tif"], "already exists", ()),
    ("train-no-cells", ["train", "--images", "a.tif", "--labels", "zero.tif", "-o", "m.safetensors", *TRAIN],
     "no cell", ()),
    ("train-patch-count", ["train", "--images", "a.tif", "--labels", "labels.tif", "-o", "m.safetensors",
                           "--patch", "16", "16", "16", *TRAIN], "patch", ()),
    ("train-onto-input", ["train", "--images", "a.tif", "--labels", "labels.tif", "-o", "a.tif", *TRAIN],
     ".safetensors", ()),
    ("train-onto-existing", ["train", "--images", "a.tif", "--labels", "labels.tif", "-o", "exists.safetensors",
                             *TRAIN], "already exists", ()),
    ("train-other-runs-checkpoints", ["train", "--images", "a.tif", "--labels", "labels.tif", "-o", "m.safetensors",
                                      "--checkpoints", "ck", *TRAIN], "already holds checkpoints", ()),
    ("train-resume-without-folder", ["train", "--images", "a.tif", "--labels", "labels.tif", "-o",
                                     "m.safetensors", "--resume", *TRAIN], "--checkpoints", ()),
    ("train-count-mismatch", ["train", "--images", "a.tif", "b.tif", "--labels", "labels.tif", "-o",
                              "m.safetensors", *TRAIN], "pairs", ()),
    ("train-hostile-init", ["train", "--images", "a.tif", "--labels", "labels.tif", "-o", "m.safetensors",
                            "--init", "hostile.safetensors", *TRAIN], "hostile", ()),
    ("evaluate-missing", ["evaluate", "nosuch.tif", "labels.tif"], "nosuch", ()),
    ("evaluate-shape-mismatch", ["evaluate", "stack.tif", "labels.tif"], "shape", ()),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_case(case, template, tmp_path, monkeypatch, capsys):
    name, argv, expected, outputs = case
    work = tmp_path / "work"
    shutil.copytree(template, work)
    monkeypatch.chdir(work)
    before = _hashes(work)
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse: a usage error
        code = stop.code
    out, err = capsys.readouterr()
    after = _hashes(work)
    assert not (work / "PWNED").exists(), "a pickle in a model file was executed"
    changed = [p for p in before if after.get(p) != before[p]]
    assert not changed, f"{name}: files changed or deleted: {changed}"
    new = sorted(p for p in set(after) - set(before) if not any(part.startswith(".") for part in Path(p).parts))
    new_roots = sorted({Path(p).parts[0] for p in new})
    assert "Traceback" not in out + err
    if expected is OK:
        assert code == 0, f"{name}: exit {code}\n{out}\n{err}"
        assert set(new_roots) == set(outputs), f"{name}: new files {new_roots}, expected {outputs}"
    else:
        assert code != 0, f"{name}: expected a failure saying {expected!r}\n{out}\n{err}"
        assert expected.lower() in (out + err).lower(), f"{name}: {expected!r} not in\n{out}\n{err}"
        assert not new_roots, f"{name}: a failed run left {new_roots}"
        message = [line for line in (out + err).splitlines() if expected.lower() in line.lower()]
        assert message and len(message[0]) < 600


def test_folder_run_twice_does_not_take_its_own_outputs(template, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    shutil.copytree(template / "dir", work)
    (work / "c_labels.tif").unlink()
    monkeypatch.chdir(work)
    for _ in range(2):
        assert main(["segment", ".", "-o", ".", *FAST]) == 0
    assert sorted(p.name for p in work.iterdir() if not p.name.startswith(".")) == ["c.tif", "c_labels.tif"]


def test_large_offsets_are_normalised_exactly():
    image = nuclei((96, 96), count=10, seed=2)[0]
    plain = tiled_unet.segment(image, "nuclei-2d", device="cpu", diameter="off")
    assert plain.max() > 3
    for shifted in (image.astype(np.int64) + 2**40, image.astype(np.float64) + 1e12,
                    image.astype(np.uint32) + 2**31):
        np.testing.assert_array_equal(tiled_unet.segment(shifted, "nuclei-2d", device="cpu", diameter="off"), plain)


@pytest.mark.parametrize("call, message", [
    (lambda img: tiled_unet.predict(img, "nuclei-2d", tile_size=64), "did you mean 'tile_shape'"),
    (lambda img: tiled_unet.predict(img, "nuclei-2d", config=tiled_unet.InferenceConfig(), device="cpu"),
     "not both"),
    (lambda img: tiled_unet.segment(img, "nuclei-2d", voxel_size=(1, 1, 1, 1)), "2 values"),
    (lambda img: tiled_unet.segment(np.full((64, 64), np.nan), "nuclei-2d"), "NaN"),
    (lambda img: tiled_unet.segment(np.stack([img] * 3, -1), "nuclei-2d"), "RGB"),
    (lambda img: tiled_unet.segment(img, "nuclei-2d", diameter=-1), "diameter"),
    (lambda img: tiled_unet.predict(img, "nuclei-2d", backend="tensorrt"), "backend"),
])
def test_api_case(call, message):
    image = nuclei((64, 64), count=4, seed=1)[0]
    with pytest.raises((ValueError, TypeError)) as error:
        call(image)
    assert message.lower() in str(error.value).lower()
    assert "\n" not in str(error.value)


def test_api_never_writes_onto_or_into_an_input(template, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(template, work)
    before = _hashes(work)
    for out in (work / "a.zarr", work / "a.zarr" / "labels.zarr"):
        with pytest.raises(ValueError, match="lies inside the input"):
            tiled_unet.segment(work / "a.zarr", "nuclei-2d", out=out, overwrite=True, device="cpu")
        with pytest.raises(ValueError, match="lies inside the input"):
            tiled_unet.predict(work / "a.zarr", "nuclei-2d", out=out, overwrite=True, device="cpu")
    assert _hashes(work) == before


def test_probabilities_left_by_a_killed_run_are_replaced(template, tmp_path, monkeypatch, capsys):
    """Killed after its probabilities were in place but before its labels: the rerun finishes
    (the marker says they are this job's), while a user's file of that name is refused above."""
    work = tmp_path / "work"
    shutil.copytree(template, work)
    monkeypatch.chdir(work)
    tifffile.imwrite(work / "o_probabilities.tif", np.ones((4, 4), np.uint8))
    (work / ".o_probabilities.tif.ours").write_text("")
    assert main(["segment", "a.tif", "-o", "o_labels.tif", "--probabilities", *FAST]) == 0
    assert tifffile.imread(work / "o_probabilities.tif").shape[-2:] == (96, 96)
    assert not (work / ".o_probabilities.tif.ours").exists() and (work / "o_labels.tif").exists()


@pytest.mark.parametrize("error, words", [
    (OSError(errno.ENOSPC, "No space left on device", "out.tif"), ("no space left", "out.tif", "free some space")),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/out.zarr"), ("cannot write", "read-only", "/mnt/ro")),
    (PermissionError(errno.EACCES, "Permission denied", "out.tif"), ("cannot write", "permission denied")),
])
def test_disk_full_and_read_only_are_one_line(error, words):
    message = os_error_message(error)
    assert "\n" not in message and all(w in message.lower() for w in words), message


@pytest.mark.parametrize("argv", [["predict", "a.tif", "-o", "x.tif", *FAST],
                                  ["segment", "--sample", "nuclei-2d", "-o", "x.tif", *FAST]])
def test_predict_and_sample_wait_for_no_one_else(argv, template, tmp_path, monkeypatch, capsys):
    """A live run holding the output's lock: the second run refuses in one line and writes nothing."""
    work = tmp_path / "work"
    shutil.copytree(template, work)
    monkeypatch.chdir(work)
    with subprocess.Popen(["sleep", "60"]) as sleeper:
        try:
            lock = lock_path(work / "x.tif")
            lock.write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                        "started": "2026-12-03 12:00:01"}))
            before = _hashes(work)
            assert main(argv) == 2
            assert f"pid {sleeper.pid}" in capsys.readouterr().err
            assert _hashes(work) == before and not (work / "x.tif").exists()
        finally:
            sleeper.kill()
