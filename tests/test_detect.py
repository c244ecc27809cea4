"""``emae detect``: chunked maps on Dask equal in-memory scoring, resume, reports, refusals."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch
import zarr

from emae.commands.detect import DONE, detect
from emae.commands.score import score_images
from emae.errors import EmaeError
from emae.io import write_tiff
from emae.io.ngff import validate_ngff
from emae.synth.tissue import make_volume, to_uint8
from emae.volume.chunks import Chunk, ChunkJob, Mapper, chunk_device, process_chunk, resolve_device
from emae.volume.tasks import client_for, device_for_run

SMALL = dict(tile=48, overlap=16, chunk=40, scheduler="synchronous", progress=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("detect")
    volume = to_uint8(make_volume((2, 90, 70), seed=4))
    volume[1, 30:50, 20:40] = 255  # a burnt square
    write_tiff(root / "stack.tif", volume, axes="ZYX")
    shutil.copytree(tiny_model, root / "run")
    return root


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_detect_writes_a_valid_map_and_reports(tmp_path, data):
    out = tmp_path / "out.zarr"
    summary = detect(data / "run", data / "stack.tif", out, **SMALL)
    assert summary["chunks"] == {"done": 2 * 3 * 2, "skipped": 0, "failed": 0}
    assert summary["startup_seconds"] == 0.0  # no cluster to start in this process
    group = zarr.open_group(str(out), mode="r")  # the root is the anomaly map
    validate_ngff(group.attrs.asdict())
    level0 = group["0"]
    assert level0.shape == (2, 90, 70) and level0.dtype == np.float32
    assert level0.chunks == (1, 40, 40)
    maps = level0[:].astype(np.float32)
    assert np.isfinite(maps).all()
    # The burnt square is the strongest detection, in section 1, where it was drawn.
    detections = _rows(tmp_path / "out_detections.csv")
    top = detections[0]
    assert top["z"] == "1" and 20 <= float(top["centroid_y"]) <= 60
    assert 10 <= float(top["centroid_x"]) <= 50
    qc = _rows(tmp_path / "out_qc.csv")
    assert len(qc) == 2 * 3 * 2 + 2  # every tile and one row per section
    section = {r["z"]: float(r["anomalous_fraction"]) for r in qc if r["tile"] == "all"}
    assert section["1"] > section["0"]
    assert (tmp_path / "out_qc.png").stat().st_size > 0


def test_a_run_started_with_chunk_records_in_one_folder_resumes(tmp_path, data, monkeypatch):
    """Stores of earlier emae kept one record per chunk directly in emae_done/: they resume."""
    import emae.volume.tasks as module

    detect(data / "run", data / "stack.tif", tmp_path / "a.zarr", **SMALL)
    original = module.process_chunk

    def fail_late(c, *args, **kwargs):
        if c.z == 1 and c.x0 > 0:
            raise RuntimeError("node lost")
        return original(c, *args, **kwargs)

    monkeypatch.setattr(module, "process_chunk", fail_late)
    with pytest.raises(EmaeError, match="chunks failed"):
        detect(data / "run", data / "stack.tif", tmp_path / "b.zarr", **SMALL, retries=0)
    monkeypatch.setattr(module, "process_chunk", original)
    done = tmp_path / "b.zarr" / DONE
    for record in (done / "z1").iterdir():  # the layout of earlier versions
        record.rename(done / record.name)
    (done / "z1").rmdir()
    assert len(list(done.glob("z1_*.npz"))) == 3
    summary = detect(data / "run", data / "stack.tif", tmp_path / "b.zarr", **SMALL)
    assert summary["chunks"] == {"done": 3, "skipped": 9, "failed": 0}
    assert sorted(p.name for p in done.iterdir()) == [
        "z0.labels.json",
        "z0.npz",
        "z1.labels.json",
        "z1.npz",
    ]
    for name in ("0", "labels/anomaly/0"):
        a = zarr.open_array(str(tmp_path / "a.zarr" / name), mode="r")[:]
        np.testing.assert_array_equal(a, zarr.open_array(str(tmp_path / "b.zarr" / name))[:])
    assert _rows(tmp_path / "a_detections.csv") == _rows(tmp_path / "b_detections.csv")


def test_a_finished_run_keeps_two_small_files_per_section(tmp_path, data):
    """Not one file per chunk: each finished section's chunk records become one manifest."""
    summary = detect(data / "run", data / "stack.tif", tmp_path / "o.zarr", **SMALL)
    assert summary["chunks"]["done"] == 12
    done = sorted(p.name for p in (tmp_path / "o.zarr" / DONE).iterdir())
    assert done == ["z0.labels.json", "z0.npz", "z1.labels.json", "z1.npz"]
    again = detect(data / "run", data / "stack.tif", tmp_path / "o.zarr", **SMALL)
    assert again["chunks"] == {"done": 0, "skipped": 12, "failed": 0}


def test_a_resumed_run_numbers_on_from_the_last_painted_mark(tmp_path, data, monkeypatch):
    """Sections that an earlier run painted are not read again to number the detections: the
    mark of the last of them holds its first id and its count."""
    import emae.volume.run as run

    out, done = tmp_path / "o.zarr", tmp_path / "o.zarr" / DONE
    detect(data / "run", data / "stack.tif", out, **SMALL)
    rows = _rows(tmp_path / "o_detections.csv")
    labels = zarr.open_array(str(out / "labels/anomaly/0"), mode="r")[:]
    in_z1 = [r for r in rows if r["z"] == "1"]
    assert in_z1 and json.loads((done / "z1.labels.json").read_text()) == {
        "first_id": min(int(r["id"]) for r in in_z1),
        "count": len(in_z1),
    }
    reads: list[int] = []
    original = run.read_manifest

    def counted(path, z, **kwargs):
        reads.append(z)
        return original(path, z, **kwargs)

    monkeypatch.setattr(run, "read_manifest", counted)
    # A run stopped before it painted section 1: section 1 is counted and painted again,
    # section 0 is not read before the reports (which read both).
    (done / "z1.labels.json").unlink()
    detect(data / "run", data / "stack.tif", out, **SMALL)
    assert reads == [1, 0, 1]
    # The mark of an earlier emae (no count): the painted sections are counted from their
    # manifests, as before.
    reads.clear()
    (done / "z1.labels.json").unlink()
    (done / "z0.labels.json").write_text(json.dumps({"first_id": 1}))
    detect(data / "run", data / "stack.tif", out, **SMALL)
    assert reads == [0, 1, 0, 1]
    assert _rows(tmp_path / "o_detections.csv") == rows
    np.testing.assert_array_equal(zarr.open_array(str(out / "labels/anomaly/0"))[:], labels)


def test_a_section_finished_again_unmarks_the_later_ones(tmp_path, data, monkeypatch):
    """A section mapped again (its manifest deleted, as the error of a damaged one says) may
    get another number of detections, so the later sections' marks go with its own: a run
    stopped after it was painted again, before the later ones were, is not trusted on."""
    import emae.volume.run as run

    out, done = tmp_path / "o.zarr", tmp_path / "o.zarr" / DONE
    detect(data / "run", data / "stack.tif", out, **SMALL)
    rows = _rows(tmp_path / "o_detections.csv")
    labels = zarr.open_array(str(out / "labels/anomaly/0"), mode="r")[:]
    (done / "z0.npz").unlink()
    original = run.label_section

    def stop_at_z1(z, *args):
        if z == 1:
            raise RuntimeError("node lost")
        return original(z, *args)

    monkeypatch.setattr(run, "label_section", stop_at_z1)
    with pytest.raises(EmaeError, match="section tasks"):
        detect(data / "run", data / "stack.tif", out, **SMALL, retries=0)
    assert sorted(p.name for p in done.iterdir()) == ["z0.labels.json", "z0.npz", "z1.npz"]
    monkeypatch.setattr(run, "label_section", original)
    detect(data / "run", data / "stack.tif", out, **SMALL)
    assert _rows(tmp_path / "o_detections.csv") == rows
    np.testing.assert_array_equal(zarr.open_array(str(out / "labels/anomaly/0"))[:], labels)


def test_detect_agrees_with_score_away_from_chunk_borders(tmp_path, data):
    detect(data / "run", data / "stack.tif", tmp_path / "d.zarr", **SMALL)
    score_images(data / "run", [data / "stack.tif"], tmp_path / "s.tif", tile=48, overlap=16)
    chunked = zarr.open_array(str(tmp_path / "d.zarr" / "0"), mode="r")[:]
    whole = tifffile.imread(tmp_path / "s.tif")
    assert np.corrcoef(chunked.astype(np.float32).ravel(), whole.ravel())[0, 1] > 0.95


def test_a_killed_run_resumes_to_the_same_result(tmp_path, data, monkeypatch):
    detect(data / "run", data / "stack.tif", tmp_path / "a.zarr", **SMALL)
    import emae.volume.tasks as module

    original = module.process_chunk
    calls = []

    def fail_late(c, *args, **kwargs):
        calls.append(c)
        if c.z == 1:
            raise RuntimeError("node lost")
        return original(c, *args, **kwargs)

    monkeypatch.setattr(module, "process_chunk", fail_late)
    with pytest.raises(EmaeError, match=r"6 of 12 chunks failed .* z1_y0_x0"):
        detect(data / "run", data / "stack.tif", tmp_path / "b.zarr", **SMALL, retries=1)
    # Section 0 is finished (its manifest replaced its chunks' records) and painted while
    # section 1 was failing; section 1 has nothing.
    done = sorted(p.name for p in (tmp_path / "b.zarr" / DONE).iterdir())
    assert done == ["z0.labels.json", "z0.npz"]
    labels = [
        zarr.open_array(str(tmp_path / n / "labels/anomaly/0"))[0] for n in ("a.zarr", "b.zarr")
    ]
    np.testing.assert_array_equal(labels[0], labels[1])
    monkeypatch.setattr(module, "process_chunk", original)
    summary = detect(data / "run", data / "stack.tif", tmp_path / "b.zarr", **SMALL)
    assert summary["chunks"] == {"done": 6, "skipped": 6, "failed": 0}
    a = zarr.open_array(str(tmp_path / "a.zarr" / "0"), mode="r")[:]
    b = zarr.open_array(str(tmp_path / "b.zarr" / "0"), mode="r")[:]
    np.testing.assert_array_equal(a, b)
    assert _rows(tmp_path / "a_detections.csv") == _rows(tmp_path / "b_detections.csv")


_KILL_AFTER_WRITE = """
import os, signal, sys
import emae.volume.chunks as chunk
from emae.cli import main

original, writes = chunk.write_region, []

def write_then_die(*args, **kwargs):
    original(*args, **kwargs)
    writes.append(1)
    if len(writes) == int(os.environ["KILL_AT"]):  # the map is written, its marker is not
        os.kill(os.getpid(), signal.SIGKILL)

chunk.write_region = write_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_a_process_killed_midway_resumes_to_the_same_result(tmp_path, data):
    """SIGKILL (no cleanup, no exception handler) right after the 5th chunk's map is written
    and before its done marker: the same command again redoes that chunk, skips the 4 before
    it, and gives the uninterrupted run's map and reports."""
    argv = ["-q", "detect", str(data / "run"), str(data / "stack.tif"), "--out"]
    options = ["--chunk", "40", "--tile", "48", "--overlap", "16", "--scheduler", "synchronous"]
    whole = [*argv, str(tmp_path / "a.zarr"), *options]
    killed = [*argv, str(tmp_path / "b.zarr"), *options]
    run = [sys.executable, "-c", _KILL_AFTER_WRITE]
    env = {**os.environ, "KILL_AT": "5"}
    assert subprocess.run([*run, *whole], env={**env, "KILL_AT": "0"}).returncode == 0
    first = subprocess.run([*run, *killed], env=env, capture_output=True, text=True)
    assert first.returncode == -signal.SIGKILL
    assert len(list((tmp_path / "b.zarr" / DONE).rglob("*.npz"))) == 4
    assert not (tmp_path / "b_detections.csv").exists()
    again = subprocess.run(
        [*run, *killed], env={**env, "KILL_AT": "0"}, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert "8 chunks done, 4 skipped" in again.stdout
    a = zarr.open_array(str(tmp_path / "a.zarr" / "0"), mode="r")[:]
    b = zarr.open_array(str(tmp_path / "b.zarr" / "0"), mode="r")[:]
    np.testing.assert_array_equal(a, b)
    for suffix in ("_detections.csv", "_qc.csv"):
        assert _rows(tmp_path / f"a{suffix}") == _rows(tmp_path / f"b{suffix}")


def test_dask_workers_give_the_same_map(tmp_path, data):
    detect(data / "run", data / "stack.tif", tmp_path / "a.zarr", **SMALL)
    local = {**SMALL, "scheduler": None, "workers": 2}
    summary = detect(data / "run", data / "stack.tif", tmp_path / "b.zarr", **local)
    assert 0 < summary["startup_seconds"] < summary["seconds"]
    assert summary["megapixels_per_s_after_start"] > summary["megapixels_per_s"]
    a = zarr.open_array(str(tmp_path / "a.zarr" / "0"), mode="r")[:]
    b = zarr.open_array(str(tmp_path / "b.zarr" / "0"), mode="r")[:]
    np.testing.assert_array_equal(a, b)


def test_outputs_and_settings_are_protected(tmp_path, data):
    out = tmp_path / "o.zarr"
    detect(data / "run", data / "stack.tif", out, **SMALL)
    with pytest.raises(EmaeError, match="other settings"):
        detect(data / "run", data / "stack.tif", out, **{**SMALL, "overlap": 8})
    detect(data / "run", data / "stack.tif", out, **{**SMALL, "overlap": 8}, overwrite=True)
    mine = tmp_path / "mine.zarr"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(EmaeError, match="already exists"):
        detect(data / "run", data / "stack.tif", mine, **SMALL)
    with pytest.raises(EmaeError, match="not an output of emae detect"):
        detect(data / "run", data / "stack.tif", mine, **SMALL, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep"
    with pytest.raises(EmaeError, match=r"must be a \.zarr store"):
        detect(data / "run", data / "stack.tif", tmp_path / "o.tif", **SMALL)
    with pytest.raises(EmaeError, match="Dask scheduler"):
        detect(
            data / "run",
            data / "stack.tif",
            tmp_path / "x.zarr",
            **{**SMALL, "scheduler": "tcp://127.0.0.1:9"},
        )


def test_cli_detect(tmp_path, data, capsys):
    from emae.cli import main

    argv = ["-q", "detect", str(data / "run"), str(data / "stack.tif"), "--out"]
    argv += [str(tmp_path / "c.zarr"), "--chunk", "64", "--tile", "48", "--overlap", "16"]
    assert main([*argv, "--scheduler", "synchronous"]) == 0
    assert "detections" in capsys.readouterr().out
    assert main([*argv, "--scheduler", "synchronous", "--overlap", "8"]) == 1
    assert "other settings" in capsys.readouterr().err


def test_bad_inputs_are_one_line_errors_and_write_nothing(tmp_path, data):
    small = tmp_path / "small.tif"
    write_tiff(small, np.zeros((20, 300), dtype=np.uint8) + 100, axes="YX")
    with pytest.raises(EmaeError, match="smaller than the 32x32 patches"):
        detect(data / "run", small, tmp_path / "a.zarr", **SMALL)
    wide = tmp_path / "u16.tif"
    write_tiff(wide, np.zeros((64, 64), dtype=np.uint16) + 1000, axes="YX")
    with pytest.raises(EmaeError, match=r"uint16 but the model .* uint8"):
        detect(data / "run", wide, tmp_path / "b.zarr", **SMALL)
    holes = zarr.open_array(
        str(tmp_path / "holes.zarr"),
        mode="w",
        shape=(64, 64),
        chunks=(32, 32),
        dtype="uint8",
        zarr_format=2,
    )
    holes[:32, :32] = 100
    with pytest.raises(EmaeError, match="3 chunk"):
        detect(data / "run", tmp_path / "holes.zarr", tmp_path / "c.zarr", **SMALL)
    assert not any((tmp_path / n).exists() for n in ("a.zarr", "b.zarr", "c.zarr"))


def test_classifier_models_write_named_probability_channels(tmp_path, data):
    from emae.classify.config import FinetuneConfig
    from emae.commands.finetune import finetune
    from emae.data.labels import LabeledSample, write_labels

    stack = str(data / "stack.tif")
    samples = [LabeledSample(stack, x, y, 0, "clean") for x in (20, 35, 50) for y in (20, 45, 70)]
    samples += [LabeledSample(stack, x, y, 1, "burnt") for x in (28, 30, 32) for y in (38, 40)]
    write_labels(tmp_path / "labels.csv", samples)
    config = FinetuneConfig(steps=20, batch_size=8, warmup_steps=1, precision="fp32")
    finetune(data / "run", tmp_path / "labels.csv", tmp_path / "clf", config, progress=False)
    summary = detect(tmp_path / "clf", data / "stack.tif", tmp_path / "p.zarr", **SMALL)
    probs = zarr.open_group(str(tmp_path / "p.zarr" / "probabilities"), mode="r")
    validate_ngff(probs.attrs.asdict())
    channels = probs.attrs["omero"]["channels"]
    assert [c["label"] for c in channels] == ["burnt", "clean"]
    assert [c["active"] for c in channels] == [True, False]  # clean hidden at first
    assert len({c["color"] for c in channels}) == 2
    assert probs.attrs["emae"]["value_scale"] == pytest.approx(1 / 255)
    level0 = probs["0"]
    assert level0.shape == (2, 2, 90, 70) and level0.dtype == np.uint8
    total = level0[:].astype(int).sum(0)
    assert np.abs(total - 255).max() <= 2  # probabilities scaled to 0-255 sum to 255
    # The classifier's encoder had a fitted score, so the anomaly map is written too.
    assert zarr.open_group(str(tmp_path / "p.zarr"), mode="r").attrs["emae"]["kind"] == (
        "anomaly map"
    )
    # Class regions are painted with their CSV ids into labels/classes.
    painted = zarr.open_array(str(tmp_path / "p.zarr" / "labels" / "classes" / "0"), mode="r")[:]
    burnt = [r for r in _rows(tmp_path / "p_detections.csv") if r["class"] == "burnt"]
    assert sorted(int(r["id"]) for r in burnt) == np.unique(painted[painted > 0]).tolist()
    for r in burnt:
        assert (painted == int(r["id"])).sum() == int(r["area"])
    qc = _rows(tmp_path / "p_qc.csv")
    assert {"fraction_burnt", "fraction_clean", "anomalous_fraction"} <= set(qc[0])
    classes = {r["class"] for r in _rows(tmp_path / "p_detections.csv")}
    assert classes <= {"anomaly", "burnt"} and summary["detections"] == len(
        _rows(tmp_path / "p_detections.csv")
    )

    # A classifier whose autoencoder moved: an error, unless the classes alone are asked for.
    record = json.loads((tmp_path / "clf" / "training.json").read_text())
    record["encoder"] = str(tmp_path / "moved-away")
    (tmp_path / "clf" / "training.json").write_text(json.dumps(record))
    with pytest.raises(EmaeError, match=r"moved-away, is gone .* --classes-only"):
        detect(tmp_path / "clf", data / "stack.tif", tmp_path / "q.zarr", **SMALL)
    detect(tmp_path / "clf", data / "stack.tif", tmp_path / "q.zarr", **SMALL, classes_only=True)
    root = zarr.open_group(str(tmp_path / "q.zarr"), mode="r")
    assert root.attrs["emae"]["kind"] == "probability map" and root["0"].shape == (2, 2, 90, 70)


def test_devices_are_checked_and_gpus_shared_out(tmp_path, data, monkeypatch):
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(EmaeError, match="device must be auto, cpu, cuda, cuda:N or mps"):
        resolve_device("gpu")
    with pytest.raises(EmaeError, match="cuda:N"):
        resolve_device("cuda:x")
    with pytest.raises(EmaeError, match=r"'cuda:99' requested but torch sees \d+ CUDA GPU"):
        resolve_device("cuda:99")
    with pytest.raises(EmaeError, match="device must be"):
        detect(data / "run", data / "stack.tif", tmp_path / "g.zarr", **SMALL, device="tpu")
    assert not (tmp_path / "g.zarr").exists()
    # An existing cluster's workers resolve the device themselves (the client may lack a GPU).
    assert device_for_run("cuda:3", "tcp://host:8786") == "cuda:3"
    assert device_for_run("auto", "tcp://host:8786") == "auto"
    with pytest.raises(EmaeError, match="device must be"):
        device_for_run("gpu", "tcp://host:8786")
    assert device_for_run("auto", "synchronous") == resolve_device("auto")
    # On a local cluster of GPU workers, worker k maps on GPU k % gpus, by its name.
    import distributed

    assert chunk_device("cpu") == "cpu" and chunk_device("cuda", 2) == "cuda:0"
    for name, expected in ((0, "cuda:0"), (3, "cuda:1"), ("external", "cuda:0")):
        worker = type("Worker", (), {"name": name})()
        monkeypatch.setattr(distributed, "get_worker", lambda worker=worker: worker)
        assert chunk_device("cuda", 2) == expected


def test_a_local_gpu_cluster_has_one_worker_per_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    client, gpus = client_for(None, None, "cuda")
    with client, client.cluster:
        assert gpus == 2 and len(client.nthreads()) == 2
    client, gpus = client_for(3, None, "cuda:1")
    with client, client.cluster:
        assert gpus == 0 and len(client.nthreads()) == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_cuda_without_a_gpu_is_a_one_line_error(tmp_path, data):
    with pytest.raises(EmaeError, match="'cuda' requested but torch sees 0 CUDA GPU"):
        detect(data / "run", data / "stack.tif", tmp_path / "g.zarr", **SMALL, device="cuda")
    assert not (tmp_path / "g.zarr").exists()


def test_chunks_map_on_the_device_chunk_device_picks(tmp_path):
    class Stop(Exception):
        pass

    class Recorder(Mapper):
        def on(self, device):
            raise Stop(device)

    c = Chunk(0, 0, 0, 8, 8)
    with pytest.raises(Stop, match=r"^cpu$"):
        process_chunk(c, Recorder(), ChunkJob("unused", 0, str(tmp_path), tile=8, overlap=0))
    with pytest.raises(EmaeError, match="device must be"):
        job = ChunkJob("unused", 0, str(tmp_path), tile=8, overlap=0, device="x")
        process_chunk(c, Recorder(), job)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_maps_match_the_cpu(tmp_path, data):
    fp32 = {**SMALL, "precision": "fp32"}
    detect(data / "run", data / "stack.tif", tmp_path / "c.zarr", **fp32, device="cpu")
    torch.cuda.reset_peak_memory_stats()
    detect(data / "run", data / "stack.tif", tmp_path / "g.zarr", **fp32, device="cuda")
    assert torch.cuda.max_memory_allocated() > 0
    local = {**fp32, "scheduler": None, "workers": None}
    detect(data / "run", data / "stack.tif", tmp_path / "w.zarr", **local, device="cuda")
    a = zarr.open_array(str(tmp_path / "c.zarr" / "0"), mode="r")[:]
    for name in ("g.zarr", "w.zarr"):
        b = zarr.open_array(str(tmp_path / name / "0"), mode="r")[:]
        np.testing.assert_allclose(b.astype(np.float32), a.astype(np.float32), atol=2e-3, rtol=2e-3)


def _trim_threshold() -> str | None:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_local_workers_run_with_the_default_allocator_settings():
    """Dask's MALLOC_TRIM_THRESHOLD_ would make every large tensor a fresh mmap (slow)."""
    from emae.volume.tasks import client_for

    client, _ = client_for(1, None)
    with client.cluster, client:
        assert set(client.run(_trim_threshold).values()) == {None}


def test_a_discriminative_model_detects_as_one_pass_over_the_section(tmp_path, tiny_settings):
    from emae.anomaly.detector import AutoencoderDetector
    from emae.commands.pretrain import pretrain
    from emae.synth.artifacts import as_unit_float, inject
    from emae.train.config import PretrainConfig

    volume = to_uint8(make_volume((1, 224, 200), seed=6))
    write_tiff(tmp_path / "clean.tif", volume, axes="ZYX")
    settings = {**tiny_settings, "score": "discriminative", "score_steps": 3}
    pretrain([tmp_path / "clean.tif"], tmp_path / "run", PretrainConfig(**settings), progress=False)
    damaged, _ = inject(as_unit_float(volume[0]), "dust", seed=1)
    damaged = np.round(damaged * 255).astype(np.uint8)
    write_tiff(tmp_path / "damaged.tif", damaged, axes="YX")
    small = {**SMALL, "chunk": 64, "overlap": 64, "tile": None}
    detect(tmp_path / "run", tmp_path / "damaged.tif", tmp_path / "d.zarr", **small)
    chunked = zarr.open_array(str(tmp_path / "d.zarr" / "0"), mode="r")[:].astype(np.float32)
    whole = AutoencoderDetector.from_bundle(tmp_path / "run").anomaly_map(damaged[None])[0]
    assert chunked.shape == whole.shape
    assert np.corrcoef(chunked.ravel(), whole.ravel())[0, 1] > 0.99
