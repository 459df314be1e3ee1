"""A real dask.distributed LocalCluster gives the in-process result exactly (probabilities and labels)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import zarr

from tiled_unet import predict
from tiled_unet.batch.files import segment_files
from tiled_unet.synthetic import sample

distributed = pytest.importorskip("distributed")

M2 = "nuclei-2d"
OPTIONS = {"device": "cpu", "precision": "float32", "tile_shape": (48, 48)}


def _model_cache_sizes() -> int:
    from tiled_unet.engine import distributed as tiled_distributed

    return len(tiled_distributed._MODELS)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        yield client


@pytest.fixture
def one_torch_thread():
    """In-process inference on one thread, as in the workers (dask starts them with OMP_NUM_THREADS=1):
    float sums over more threads may differ in the last bit."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A 2-D zarr image (frames T x Y x X, so frames and blocks are both exercised)."""
    base = sample("nuclei-2d")[0]
    image = np.stack([base[:200, :176], base[40:240, 60:236][::-1]])
    path = tmp_path_factory.mktemp("input") / "frames.zarr"
    zarr.open_array(str(path), mode="w", shape=image.shape, chunks=(1, 64, 64), dtype=image.dtype)[:] = image
    return path


def test_cluster_equals_in_process(client, images, tmp_path, one_torch_thread):
    local = segment_files([images], tmp_path / "local", M2, probabilities=True, **OPTIONS)
    remote = segment_files([images], tmp_path / "cluster", M2, probabilities=True, client=client, **OPTIONS)
    assert [r.status for r in local + remote] == ["done", "done"]
    for name in ("frames_labels.zarr", "frames_probabilities.zarr"):
        a = zarr.open_array(str(tmp_path / "local" / name), mode="r")[...]
        b = zarr.open_array(str(tmp_path / "cluster" / name), mode="r")[...]
        assert np.array_equal(a, b), name
    labels = zarr.open_array(str(tmp_path / "cluster" / "frames_labels.zarr"), mode="r")
    assert labels.shape == (2, 200, 176) and labels[...].max() > 5
    # each worker built the model once and kept it
    assert set(client.run(_model_cache_sizes).values()) == {1}


def test_predict_distributed_and_batches(client, images, tmp_path, one_torch_thread):
    from tiled_unet.engine.distributed import predict_distributed

    options = {**OPTIONS, "batch_size": 2}
    expected = predict(str(images), M2, out=tmp_path / "local.zarr", **options)
    result = predict_distributed(images, M2, tmp_path / "cluster.zarr", client, **options)
    assert result.attrs["complete"] and np.array_equal(result[...], expected[...])


def test_bad_scheduler_address_is_reported(images, tmp_path):
    from tiled_unet.engine.distributed import connect

    with pytest.raises(ValueError, match="cannot reach a dask scheduler"):
        connect("tcp://127.0.0.1:1", timeout="1s")
    with pytest.raises(TypeError, match="scheduler address"):
        connect(42)


def test_command_line_scheduler_address(client, images, tmp_path):
    from tiled_unet.cli.main import main

    args = [str(images), "--model", M2, "--device", "cpu", "--precision", "float32", "--tile-shape", "48,48"]
    assert main(["segment", *args, "-o", str(tmp_path / "local")]) == 0
    assert main(["segment", *args, "-o", str(tmp_path / "cluster"), "--scheduler", client.scheduler.address]) == 0
    a, b = (zarr.open_array(str(tmp_path / d / "frames_labels.zarr"), mode="r")[...] for d in ("local", "cluster"))
    assert np.array_equal(a, b)


def test_stopped_cluster_run_resumes_to_the_same_result(client, images, tmp_path):
    from tiled_unet.batch.files import Notice, segment_files_iter

    local = segment_files([images], tmp_path / "local", M2, **OPTIONS)
    gen = segment_files_iter([images], tmp_path / "cluster", M2, client=client, **OPTIONS)
    for event in gen:
        if hasattr(event, "frame") and event.done > 0:
            gen.close()
            break
    deadline = time.monotonic() + 60
    while any(client.processing().values()) and time.monotonic() < deadline:  # blocks already running end
        time.sleep(0.05)
    events = []
    remote = segment_files([images], tmp_path / "cluster", M2, client=client, progress=events.append, **OPTIONS)
    assert [r.status for r in local + remote] == ["done", "done"]
    assert [e.text.split(":")[0] for e in events if isinstance(e, Notice)] == ["resuming"]
    a, b = (zarr.open_array(str(tmp_path / d / "frames_labels.zarr"), mode="r")[...] for d in ("local", "cluster"))
    assert np.array_equal(a, b)


def test_cancelled_cluster_labelling_leaves_no_task_writing(client, tmp_path):
    """A progress callback that raises stops labelling on a cluster only after the running tasks end."""
    from tiled_unet.instances.blockwise import labels_blockwise
    from tiled_unet.instances.memory import instances_from_probabilities
    from tiled_unet.training.targets import instance_targets

    labels = sample("nuclei-2d")[1]
    targets = instance_targets(labels)
    probs = np.stack([(targets == k).astype(np.float32) for k in range(3)])
    source = zarr.open_array(str(tmp_path / "probs.zarr"), mode="w", shape=probs.shape, chunks=(3, 32, 32),
                             dtype="float32")
    source[:] = probs
    scratch = tmp_path / "scratch"
    calls = []

    def cancel(done, total, stage):
        calls.append(stage)
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        labels_blockwise(source, tmp_path / "labels.zarr", block_shape=(32, 32), scheduler=client,
                         tmpdir=scratch, progress=cancel)
    assert calls == ["masks", "masks"]
    time.sleep(1.0)  # a task still running would write into the removed folder
    assert os.listdir(scratch) == []
    done = labels_blockwise(source, tmp_path / "labels.zarr", block_shape=(32, 32), scheduler=client,
                            overwrite=True, tmpdir=scratch)
    assert done.attrs["complete"] is True
    assert np.array_equal(done[...], instances_from_probabilities(probs))


def test_cluster_reads_an_empty_margin_as_in_process(client, tmp_path, one_torch_thread):
    from tiled_unet.engine.distributed import predict_distributed

    base = sample("nuclei-2d")[0][:160, :160]
    image = np.zeros((2, 224, 224), base.dtype)  # frames padded with a zero margin, as after registration
    image[0, 32:192, 32:192], image[1, 20:180, 50:210] = base, base[::-1]
    path = tmp_path / "padded.zarr"
    zarr.open_array(str(path), mode="w", shape=image.shape, chunks=(1, 64, 64), dtype=image.dtype)[:] = image
    expected = predict(str(path), M2, out=tmp_path / "local.zarr", **OPTIONS)
    result = predict_distributed(path, M2, tmp_path / "cluster.zarr", client, **OPTIONS)
    assert np.array_equal(result[...], expected[...])
    assert expected[:, 0, :8, :8].min() > 0.9  # the margin is background (class 0)
