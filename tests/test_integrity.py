"""Damaged or unfinished outputs are one clear line (issue 18), never a traceback or a wrong count.

Weights changed after emae wrote them, truncated or foreign done markers, corrupt resume state,
a full disk while saving, and the report of a detect run that did not finish.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import zarr

from emae.commands.detect import DONE, detect
from emae.commands.pretrain import pretrain
from emae.commands.run_dir import read_run_state
from emae.data.dataset import RandomPatchDataset
from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError
from emae.folders.autoencoder import load_bundle, save_bundle, update_bundle
from emae.folders.classifier import FittedClassifier, load_classifier, save_classifier
from emae.io import write_tiff
from emae.models import build_model
from emae.models.classifier import EncoderClassifier
from emae.report.detection import detect_section
from emae.report.render import build_sections
from emae.synth.tissue import make_volume, to_uint8
from emae.train.config import PretrainConfig
from emae.volume.components import chunk_components
from emae.volume.done import read_chunk_record, read_manifest, write_chunk_record

KWARGS = {"channels": [8, 16], "latent_channels": 4}
NORMALIZER = PercentileNormalizer(12.0, 240.0, low=1.0, high=99.0, source_dtype="uint8")
SMALL = dict(tile=48, overlap=16, chunk=40, scheduler="synchronous", progress=False)
CHUNKS = 2 * 3 * 2  # a (2, 90, 70) volume in chunks of 40
MODIFIED = r"does not match the checksum in config\.json; the folder was modified after emae"


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_model):
    """A tiny pretrained model, its input stack and one finished detect store ``out.zarr``."""
    root = tmp_path_factory.mktemp("integrity")
    volume = to_uint8(make_volume((2, 90, 70), seed=4))
    write_tiff(root / "stack.tif", volume, axes="ZYX")
    shutil.copytree(tiny_model, root / "run")
    detect(root / "run", root / "stack.tif", root / "out.zarr", **SMALL)
    return root


@pytest.fixture(scope="module")
def tiny(tiny_settings) -> dict:
    """Settings for this module's own training runs: those of the shared ``tiny_model``."""
    return {**tiny_settings, "score": "pixel", "norm": "none"}


def _model(seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_model("conv-ae", **KWARGS)


def _save(path: Path, **extra) -> Path:
    return save_bundle(
        path,
        model=_model(),
        model_name="conv-ae",
        model_kwargs=KWARGS,
        normalizer=NORMALIZER,
        config={"patch_size": 32},
        **extra,
    )


def _edit_header(path: Path, edit) -> None:
    header = json.loads((path / "config.json").read_text())
    edit(header)
    (path / "config.json").write_text(json.dumps(header))


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- 1. checksums of the model folders ---------------------------------------------------------


def test_weights_replaced_by_other_numbers_are_refused(tmp_path):
    path = _save(tmp_path / "run", arrays={"mean": np.arange(4.0)})
    load_bundle(path)
    state = safetensors.torch.load_file(path / "model.safetensors")
    other = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    safetensors.torch.save_file(other, path / "model.safetensors")  # same names and shapes
    with pytest.raises(EmaeError, match=rf"run: model\.safetensors {MODIFIED}"):
        load_bundle(path)

    path = _save(tmp_path / "run", overwrite=True, arrays={"mean": np.arange(4.0)})
    safetensors.torch.save_file({"mean": torch.zeros(4)}, path / "scoring.safetensors")
    with pytest.raises(EmaeError, match=rf"scoring\.safetensors {MODIFIED}"):
        load_bundle(path)
    (path / "scoring.safetensors").unlink()
    with pytest.raises(EmaeError, match=r"scoring\.safetensors is missing \(config\.json lists"):
        load_bundle(path)

    path = _save(tmp_path / "run", overwrite=True)  # arrays slipped in after saving
    safetensors.torch.save_file({"mean": torch.zeros(4)}, path / "scoring.safetensors")
    with pytest.raises(EmaeError, match=r"scoring\.safetensors has no checksum in config\.json"):
        load_bundle(path)


def test_folders_from_before_checksums_load_with_one_warning(tmp_path, caplog):
    path = _save(tmp_path / "old", arrays={"mean": np.arange(4.0)})
    _edit_header(path, lambda h: h.pop("checksums"))
    with caplog.at_level(logging.WARNING, logger="emae.folders.integrity"):
        for _ in range(2):
            bundle = load_bundle(path)
    assert np.array_equal(bundle.arrays["mean"], np.arange(4.0))
    warned = [r.getMessage() for r in caplog.records if "without checksums" in r.getMessage()]
    assert len(warned) == 1 and str(path) in warned[0]


def test_update_keeps_the_checksums_current_and_vouches_for_nothing_changed(tmp_path):
    path = _save(tmp_path / "run", arrays={"mean": np.arange(4.0)})
    (path / "notes.txt").write_text("mine")
    update_bundle(path, arrays={"mean": np.ones(3)}, threshold={"value": 1.0, "method": "fixed"})
    bundle = load_bundle(path)  # the new arrays match their new checksum
    assert np.array_equal(bundle.arrays["mean"], np.ones(3)) and bundle.threshold["value"] == 1.0
    assert (path / "notes.txt").read_text() == "mine"  # the rest is carried over
    assert _hidden(tmp_path) == []

    state = safetensors.torch.load_file(path / "model.safetensors")
    safetensors.torch.save_file({k: v * 0 for k, v in state.items()}, path / "model.safetensors")
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with pytest.raises(EmaeError, match=rf"model\.safetensors {MODIFIED}"):
        update_bundle(path, threshold={"value": 2.0, "method": "fixed"})
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before


def _classifier(path: Path, **extra) -> Path:
    model = EncoderClassifier(_model(), n_classes=2, patch_size=32, **extra)
    features = ("area",) if extra.get("n_extra") else ()
    fitted = FittedClassifier(
        model,
        ("clean", "fold"),
        NORMALIZER,
        "conv-ae",
        KWARGS,
        feature_names=features,
        extra_mean=np.zeros(len(features)) if features else None,
        extra_std=np.ones(len(features)) if features else None,
    )
    return save_classifier(path, fitted, config={}, overwrite=True)


def test_classifier_folders_are_checked_like_model_folders(tmp_path):
    path = _classifier(tmp_path / "clf", n_extra=1)
    assert load_classifier(path).classes == ("clean", "fold")
    safetensors.torch.save_file(
        {"mean": torch.ones(1), "std": torch.ones(1)}, path / "extra.safetensors"
    )
    with pytest.raises(EmaeError, match=rf"clf: extra\.safetensors {MODIFIED}"):
        load_classifier(path)

    path = _classifier(tmp_path / "clf")
    state = safetensors.torch.load_file(path / "model.safetensors")
    safetensors.torch.save_file(
        {k: v.clone() + 1 for k, v in state.items()}, path / "model.safetensors"
    )
    with pytest.raises(EmaeError, match=rf"clf: model\.safetensors {MODIFIED}"):
        load_classifier(path)

    # Without checksums (an older folder) the tensor names and header keys are still checked.
    path = _classifier(tmp_path / "clf")
    _edit_header(path, lambda h: h.pop("checksums"))
    load_classifier(path)
    renamed = {("x." + k if k.startswith("head.") else k): v for k, v in state.items()}
    safetensors.torch.save_file(renamed, path / "model.safetensors")
    with pytest.raises(EmaeError, match=r"model\.safetensors: weights do not match the model"):
        load_classifier(path)
    _edit_header(path, lambda h: h.pop("head"))
    with pytest.raises(EmaeError, match=r"config\.json: expected keys .*'head'"):
        load_classifier(path)
    _edit_header(path, lambda h: h.update(head={"n_classes": 2, "patch_size": 32, "size": 3}))
    with pytest.raises(EmaeError, match=r"config\.json: .*unexpected keyword argument 'size'"):
        load_classifier(path)


# --- 2. done markers of a detect store -----------------------------------------------------------


def _copy_store(data: Path, to: Path) -> Path:
    shutil.copytree(data / "out.zarr", to)
    return to


def _truncate(marker: Path) -> None:
    marker.write_bytes(marker.read_bytes()[: marker.stat().st_size // 2])


def _foreign(marker: Path) -> None:
    with marker.open("wb") as f:
        np.savez(f, a=np.zeros(3))


def _other(marker: Path) -> None:
    if marker.name.startswith("z0_"):  # a chunk record: section z1's folder holds the other
        marker.write_bytes((marker.parent.parent / "z1" / "z1_y0_x0.npz").read_bytes())
    else:
        marker.write_bytes(marker.with_name("z1.npz").read_bytes())


_DAMAGE = [
    (_truncate, r"\(File is not a zip file\)"),
    (lambda marker: marker.write_text("not a marker"), r"\(not an \.npz archive of arrays\)"),
    (lambda marker: marker.write_bytes(b""), r"\(.+\)"),
    (_foreign, r"\((qc|tiles) is not a file in the archive\)"),
    (_other, r"\(it holds (chunk z1_y0_x0|tiles of another section than z=0)\)"),
]
_IDS = ["truncated", "text", "empty", "foreign-npz", "other"]


def _chunk_records(tmp_path: Path) -> Path:
    """Two chunk records, as a section in progress holds them."""
    values = np.zeros((4, 4), np.float32)
    for z in (0, 1):
        qc = {"z": z, "y0": 0, "x0": 0, "height": 4, "width": 4, "anomalous_fraction": 0.0}
        write_chunk_record(
            tmp_path, f"z{z}_y0_x0", qc, [chunk_components(values, values > 1, z, 0, 0)]
        )
    return tmp_path / DONE / "z0" / "z0_y0_x0.npz"


@pytest.mark.parametrize(("damage", "reason"), _DAMAGE, ids=_IDS)
def test_an_unreadable_chunk_record_is_one_line_naming_it(tmp_path, damage, reason):
    marker = _chunk_records(tmp_path)
    read_chunk_record(marker)  # readable before the damage
    damage(marker)
    with pytest.raises(EmaeError, match=rf"z0_y0_x0\.npz: unreadable done marker {reason}") as err:
        read_chunk_record(marker)
    assert "rerun emae detect to map that chunk again" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("damage", "reason"), _DAMAGE, ids=_IDS)
def test_an_unreadable_section_manifest_is_one_line_naming_it(tmp_path, data, damage, reason):
    out = _copy_store(data, tmp_path / "out.zarr")
    damage(out / DONE / "z0.npz")
    with pytest.raises(EmaeError, match=rf"z0\.npz: unreadable done marker {reason}") as err:
        read_manifest(out, 0)
    assert "delete it and rerun emae detect to map that section again" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_truncated_manifest_stops_detect_with_what_to_do(tmp_path, data):
    out = _copy_store(data, tmp_path / "out.zarr")
    marker = out / DONE / "z1.npz"
    marker.write_bytes(marker.read_bytes()[:100])
    with pytest.raises(EmaeError, match=r"z1\.npz: unreadable done marker .* delete it"):
        detect(data / "run", data / "stack.tif", out, **SMALL)
    assert _hidden(tmp_path) == []  # the reports' temporary files are gone
    marker.unlink()  # what the message says to do
    summary = detect(data / "run", data / "stack.tif", out, **SMALL)
    assert summary["chunks"] == {"done": CHUNKS // 2, "skipped": CHUNKS // 2, "failed": 0}
    for name in ("0", "labels/anomaly/0"):
        again = zarr.open_array(str(out / name), mode="r")[:]
        np.testing.assert_array_equal(again, zarr.open_array(str(data / "out.zarr" / name))[:])


def test_a_marker_of_another_run_stops_the_reports_with_its_chunk(tmp_path, data):
    out = _copy_store(data, tmp_path / "out.zarr")
    marker = out / DONE / "z0.npz"
    with np.load(marker) as f:
        arrays = dict(f)
    tiles = json.loads(str(arrays["tiles"]))
    del tiles[2]["mean_anomaly"]  # chunk z0_y40_x0, e.g. written by a classifier run
    with marker.open("wb") as f:
        np.savez(f, **{**arrays, "tiles": np.array(json.dumps(tiles))})
    with pytest.raises(
        EmaeError, match=r"done marker of chunk z0_y40_x0 holds QC numbers .*delete"
    ):
        detect(data / "run", data / "stack.tif", out, **SMALL)
    assert _hidden(tmp_path) == []


# --- 3. corrupt state of an interrupted training run --------------------------------------------


@pytest.fixture
def interrupted(tmp_path, data, tiny, interrupted_from):
    """An interrupted pretraining run: ``RUN.training/`` with a checkpoint, no ``RUN/``."""
    config = PretrainConfig(**{**tiny, "steps": 6})
    with interrupted_from(RandomPatchDataset, 3 * 4), pytest.raises(KeyboardInterrupt):
        pretrain([data / "stack.tif"], tmp_path / "run", config, progress=False)
    work = tmp_path / "run.training"
    assert (work / "checkpoint.pt").is_file() and not (tmp_path / "run").exists()
    return config, work


def test_a_foreign_checkpoint_is_one_line(tmp_path, data, interrupted):
    config, work = interrupted
    other = build_model("conv-ae", channels=(4, 8), latent_channels=2)
    torch.save(
        {"model": other.state_dict(), "optimizer": {}, "scheduler": {}}, work / "checkpoint.pt"
    )
    with pytest.raises(EmaeError, match=r"checkpoint\.pt: does not fit this model .* --overwrite"):
        pretrain([data / "stack.tif"], tmp_path / "run", config, resume=True, progress=False)
    torch.save({"step": 3}, work / "checkpoint.pt")
    with pytest.raises(EmaeError, match=r"checkpoint\.pt: not an emae checkpoint"):
        pretrain([data / "stack.tif"], tmp_path / "run", config, resume=True, progress=False)


def test_run_state_files_are_read_in_one_line(tmp_path):
    path = tmp_path / "run.training" / "normalization.json"
    path.parent.mkdir()
    with pytest.raises(EmaeError, match=r"normalization\.json: missing; .* --overwrite"):
        read_run_state(path)
    path.write_text('{"low_value": 1')
    with pytest.raises(EmaeError, match=r"normalization\.json: not readable as JSON"):
        read_run_state(path, PercentileNormalizer.from_dict)
    path.write_text('{"low_value": 1}')
    with pytest.raises(EmaeError, match=r"unexpected content \(normalizer fields: .*--overwrite"):
        read_run_state(path, PercentileNormalizer.from_dict)
    path.write_text("[1, 2]")
    with pytest.raises(EmaeError, match=r"unexpected content"):
        read_run_state(path, lambda value: value["config"])
    path.write_text(json.dumps(NORMALIZER.to_dict()))
    assert read_run_state(path, PercentileNormalizer.from_dict) == NORMALIZER


@pytest.mark.parametrize("name", ["normalization.json", "config.json"])
def test_resume_with_corrupt_state_is_one_line(tmp_path, data, interrupted, name):
    config, work = interrupted
    (work / name).write_text('{"config": {"steps"')
    with pytest.raises(EmaeError, match=rf"run\.training/{name}: not readable as JSON"):
        pretrain([data / "stack.tif"], tmp_path / "run", config, resume=True, progress=False)


# --- 4. a full disk ------------------------------------------------------------------------------

#: What torch.save raises when the disk fills up (its zip writer reports no errno).
TORCH_ENOSPC = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"


def test_a_full_disk_while_checkpointing_is_one_line_and_leaves_no_file(
    tmp_path, data, tiny, monkeypatch
):
    def full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK partial")  # what torch had written when the disk filled up
        raise RuntimeError(TORCH_ENOSPC)

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(
        EmaeError, match=r"cannot write .*checkpoint\.pt: .*no space left on device"
    ):
        pretrain([data / "stack.tif"], tmp_path / "run", PretrainConfig(**tiny), progress=False)
    work = tmp_path / "run.training"
    assert not (work / "checkpoint.pt").exists() and _hidden(work) == []
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), RuntimeError(TORCH_ENOSPC)],
    ids=["oserror", "torch"],
)
def test_a_full_disk_while_saving_a_model_folder_is_one_line(tmp_path, monkeypatch, error):
    def full(tensors, filename, *args, **kwargs):
        Path(filename).write_bytes(b"partial")
        raise error

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(EmaeError, match=r"cannot write .*run: .*no space left on device"):
        _save(tmp_path / "run")
    with pytest.raises(EmaeError, match=r"cannot write .*clf: .*no space left on device"):
        _classifier(tmp_path / "clf")
    assert list(tmp_path.iterdir()) == []


def test_other_runtime_errors_are_not_taken_for_a_full_disk(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        _save(tmp_path / "run")


# --- 5. the report of a detect run that did not finish -------------------------------------------


def _status(section: dict) -> tuple[dict, dict]:
    items = dict(section["blocks"][0]["items"])
    return items, dict(section["highlights"])


def test_report_of_a_finished_store_counts_its_detections(data):
    items, highlights = _status(detect_section(data / "out.zarr"))
    assert "status" not in items and int(highlights["detections in the volume"]) >= 0


def test_report_of_a_killed_detect_run_says_incomplete(tmp_path, data):
    out = _copy_store(data, tmp_path / "out.zarr")
    for suffix in ("_detections.csv", "_qc.csv", "_qc.png"):  # an earlier run's reports
        shutil.copy(data / f"out{suffix}", tmp_path / f"out{suffix}")
    (out / DONE / "z1.npz").unlink()  # section 1 never finished
    expected = f"incomplete: {CHUNKS // 2} of {CHUNKS} chunks done; rerun emae detect to finish"
    items, highlights = _status(detect_section(out))
    assert items["status"] == expected and "detections" not in items
    assert highlights == {"whole-volume detection": expected}
    summary = {
        k: v for s in build_sections([out]) for b in s["blocks"] for k, v in b.get("items", [])
    }
    assert summary["whole-volume detection"] == expected
    assert "detections in the volume" not in summary


def test_report_of_a_store_without_reports_says_incomplete(tmp_path, data):
    out = _copy_store(data, tmp_path / "out.zarr")  # every chunk done, the reports never written
    items, highlights = _status(detect_section(out))
    assert items["status"] == (
        f"incomplete: all {CHUNKS} chunks done but no detection report written; "
        "rerun emae detect to finish"
    )
    assert "detections in the volume" not in highlights


def test_report_of_a_store_with_corrupt_settings_is_one_line(tmp_path, data):
    out = _copy_store(data, tmp_path / "out.zarr")
    (out / "emae_run.json").write_text('{"shape": [2, 9')
    with pytest.raises(EmaeError, match=r"emae_run\.json: not readable as JSON"):
        detect_section(out)
