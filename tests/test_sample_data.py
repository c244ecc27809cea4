"""``emae sample-data`` writes a complete, documented, reproducible dataset."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
import tifffile

from emae.errors import EmaeError
from emae.synth.sample_data import CLASSES, SampleDataConfig, tiny_config, write_sample_data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "data"
    manifest = write_sample_data(out, tiny_config(seed=3))
    return out, manifest


def _digest(folder):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_documented_files_exist(tiny):
    out, _ = tiny
    for name in (
        "README.md",
        "labels.csv",
        "classes.json",
        "manifest.json",
        "unlabeled/volume.tif",
        "unlabeled/truth.tif",
        "labeled/sections.tif",
    ):
        assert (out / name).is_file(), name
    images = sorted(p.name for p in (out / "test/images").iterdir())
    masks = sorted(p.name for p in (out / "test/masks").iterdir())
    assert images == masks == ["test_000.tif", "test_001.tif"]
    readme = (out / "README.md").read_text()
    assert "labels.csv" in readme and "test/masks/" in readme


def test_volumes_and_masks_agree(tiny):
    out, manifest = tiny
    volume = tifffile.imread(out / "unlabeled/volume.tif")
    truth = tifffile.imread(out / "unlabeled/truth.tif")
    assert volume.shape == truth.shape == (3, 256, 256)
    assert volume.dtype == np.uint8 and truth.max() < len(CLASSES)
    assert manifest["unlabeled_artifact_fraction"] == pytest.approx((truth > 0).mean())
    mask = tifffile.imread(out / "test/masks/test_000.tif")
    assert mask.shape == (192, 192) and (mask > 0).any() and (mask == 0).mean() > 0.5
    assert json.loads((out / "classes.json").read_text())["0"] == "clean"


def test_labels_are_inside_and_match_the_truth(tiny):
    out, manifest = tiny
    rows = list(csv.DictReader((out / "labels.csv").open()))
    assert rows and set(rows[0]) == {"image", "x", "y", "z", "label", "group"}
    sections = tifffile.imread(out / "labeled/sections.tif")
    margin = tiny_config().margin
    counts = {name: 0 for name in CLASSES}
    for row in rows:
        x, y, z = int(row["x"]), int(row["y"]), int(row["z"])
        assert margin <= x < sections.shape[2] - margin and margin <= y < sections.shape[1] - margin
        assert 0 <= z < sections.shape[0]
        counts[row["label"]] += 1
    assert counts == manifest["label_counts"]
    assert counts["clean"] == max(counts.values())
    assert sum(counts[name] > 0 for name in CLASSES[1:]) >= len(CLASSES) - 3


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    cfg = tiny_config(seed=1).model_copy(update={"unlabeled_sections": 1, "label_sections": 2})
    write_sample_data(tmp_path / "a", cfg)
    write_sample_data(tmp_path / "b", cfg)
    write_sample_data(tmp_path / "c", cfg.model_copy(update={"seed": 2}))
    a, b, c = (_digest(tmp_path / n) for n in "abc")
    assert a == b
    assert a["unlabeled/volume.tif"] != c["unlabeled/volume.tif"]


def test_existing_folder_is_not_overwritten(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(EmaeError, match="already exists"):
        write_sample_data(out, tiny_config())
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_config_rejects_unknown_fields_and_artifacts():
    with pytest.raises(ValueError, match="extra"):
        SampleDataConfig(sections=3)
    with pytest.raises(ValueError, match="unknown artifact types"):
        SampleDataConfig(label_counts={"smudge": 3})


def test_overwrite_replaces_sample_data_but_not_other_folders(tmp_path):
    cfg = tiny_config(seed=1).model_copy(update={"unlabeled_sections": 1, "label_sections": 2})
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "raw.tif").write_text("user data")
    with pytest.raises(EmaeError, match="not an emae sample-data folder"):
        write_sample_data(mine, cfg, overwrite=True)
    assert [p.name for p in mine.iterdir()] == ["raw.tif"]
    write_sample_data(tmp_path / "d", cfg)
    write_sample_data(tmp_path / "d", cfg.model_copy(update={"seed": 2}), overwrite=True)
    assert json.loads((tmp_path / "d/manifest.json").read_text())["config"]["seed"] == 2
