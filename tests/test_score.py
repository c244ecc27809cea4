"""``emae score``: maps with the input's spatial shape, the scores CSV, and refusals."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
import zarr

from emae.cli import main
from emae.commands.pretrain import pretrain
from emae.commands.score import score_images, scores_path
from emae.io import write_tiff
from emae.synth.tissue import make_section, make_volume, to_uint8
from emae.train.config import PretrainConfig


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_settings):
    root = tmp_path_factory.mktemp("score")
    volume = to_uint8(make_volume((3, 80, 72), seed=1))
    write_tiff(root / "stack.tif", volume, axes="ZYX")
    (root / "sections").mkdir()
    for z in range(3):
        write_tiff(root / "sections" / f"s{z}.tif", volume[z], axes="YX")
    write_tiff(root / "other.tif", to_uint8(make_section((40, 40), seed=2)), axes="YX")
    pretrain([root / "stack.tif"], root / "run", PretrainConfig(**tiny_settings), progress=False)
    return root


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_2d_image_gives_a_yx_tiff_map_and_one_row(tmp_path, data):
    result = score_images(data / "run", [data / "sections" / "s0.tif"], tmp_path / "m.tif")
    assert result["axes"] == "YX"
    m = tifffile.imread(tmp_path / "m.tif")
    assert m.shape == (80, 72) and m.dtype == np.float32
    rows = _rows(tmp_path / "m_scores.csv")
    assert len(rows) == 1 and rows[0]["section"] == "0"
    assert float(rows[0]["max"]) == pytest.approx(float(m.max()), rel=1e-5)
    assert 0.0 <= float(rows[0]["anomalous_fraction"]) <= 1.0


@pytest.mark.parametrize("inputs", [["stack.tif"], ["sections"], ["sections/*.tif"]])
def test_stacks_folders_and_globs_give_the_same_zyx_map(tmp_path, data, inputs):
    out = tmp_path / "m.zarr"
    result = score_images(data / "run", [str(data / i) for i in inputs], out)
    assert result["axes"] == "ZYX" and result["shape"] == [3, 80, 72]
    level0 = zarr.open_array(out / "0", mode="r")[:]
    reference = tmp_path / "ref.tif"
    score_images(data / "run", [data / "stack.tif"], reference)
    np.testing.assert_allclose(level0, tifffile.imread(reference), rtol=1e-6, atol=1e-6)
    assert [r["section"] for r in _rows(scores_path(out))] == (
        ["0", "0", "0"] if "*" in inputs[0] else ["0", "1", "2"]
    )


def test_a_bright_defect_raises_its_section_score(tmp_path, data):
    volume = tifffile.imread(data / "stack.tif")
    damaged = volume.copy()
    damaged[1, 20:50, 20:50] = 255
    write_tiff(tmp_path / "damaged.tif", damaged, axes="ZYX")
    score_images(data / "run", [tmp_path / "damaged.tif"], tmp_path / "m.tif")
    scores = [float(r["score"]) for r in _rows(tmp_path / "m_scores.csv")]
    assert scores[1] > max(scores[0], scores[2])
    m = tifffile.imread(tmp_path / "m.tif")
    assert m[1, 25:45, 25:45].mean() > m[0, 25:45, 25:45].mean()


def test_existing_outputs_are_kept_unless_overwrite(tmp_path, data):
    out = tmp_path / "m.tif"
    out.write_bytes(b"mine")
    with pytest.raises(Exception, match="already exists"):
        score_images(data / "run", [data / "stack.tif"], out)
    assert out.read_bytes() == b"mine"
    with pytest.raises(Exception, match="is not an anomaly map written by emae score"):
        score_images(data / "run", [data / "stack.tif"], out, overwrite=True)
    assert out.read_bytes() == b"mine"
    mine = tmp_path / "mine.tif"
    score_images(data / "run", [data / "stack.tif"], mine)
    score_images(data / "run", [data / "stack.tif"], mine, overwrite=True)
    assert tifffile.imread(mine).shape == (3, 80, 72)


def test_cli_score_and_its_one_line_errors(tmp_path, data, capsys):
    out = tmp_path / "m.tif"
    assert main(["-q", "score", str(data / "run"), str(data / "stack.tif"), "--out", str(out)]) == 0
    assert "ZYX anomaly map" in capsys.readouterr().out
    cases = [
        ([str(data / "run"), str(data / "stack.tif"), "--out", str(tmp_path / "m.png")], ".tif"),
        (
            [str(tmp_path / "nope"), str(data / "stack.tif"), "--out", str(tmp_path / "a.tif")],
            "model folder not found",
        ),
        (
            [
                str(data / "run"),
                str(data / "stack.tif"),
                str(data / "other.tif"),
                "--out",
                str(tmp_path / "b.tif"),
            ],
            "different section sizes",
        ),
        (
            [str(data / "run"), str(tmp_path / "missing.tif"), "--out", str(tmp_path / "c.tif")],
            "missing.tif",
        ),
    ]
    for argv, message in cases:
        assert main(["-q", "score", *argv]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_tiled_maps_match_the_whole_section_away_from_tile_borders(tmp_path, data):
    whole = score_images(data / "run", [data / "stack.tif"], tmp_path / "whole.tif", tile=1024)
    tiled = score_images(
        data / "run", [data / "stack.tif"], tmp_path / "tiled.tif", tile=48, overlap=16
    )
    assert whole["shape"] == tiled["shape"]
    a, b = tifffile.imread(tmp_path / "whole.tif"), tifffile.imread(tmp_path / "tiled.tif")
    # Same map up to what tile borders change (padding, local statistics near the border).
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


def test_truth_masks_give_auroc_ap_and_aupro(tmp_path, data, capsys):
    volume = tifffile.imread(data / "stack.tif")
    damaged = volume.copy()
    damaged[1, 20:50, 20:50] = 255
    write_tiff(tmp_path / "damaged.tif", damaged, axes="ZYX")
    masks = np.zeros(volume.shape, np.uint8)
    masks[1, 20:50, 20:50] = 1
    tifffile.imwrite(tmp_path / "truth.tif", masks, photometric="minisblack")  # another tool
    result = score_images(
        data / "run", [tmp_path / "damaged.tif"], tmp_path / "m.tif", truth=tmp_path / "truth.tif"
    )
    truth = result["truth"]
    assert truth["regions"] == 1 and truth["artifact_fraction"] == pytest.approx(900 / masks.size)
    assert truth["auroc"] > 0.9 and 0 < truth["aupro"] <= 1 and 0 < truth["ap"] <= 1
    argv = ["-q", "score", str(data / "run"), str(tmp_path / "damaged.tif")]
    out = ["--out", str(tmp_path / "n.tif"), "--truth", str(tmp_path / "truth.tif")]
    assert main([*argv, *out]) == 0
    assert f"pixel AUROC {truth['auroc']:.3f}" in capsys.readouterr().out
    tifffile.imwrite(tmp_path / "flat.tif", masks[:2], photometric="minisblack")
    bad = ["--out", str(tmp_path / "o.tif"), "--truth", str(tmp_path / "flat.tif")]
    assert main([*argv, *bad]) == 1
    err = capsys.readouterr().err
    assert "must have the map's shape 3 x 80 x 72" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.tif").exists()  # refused before any map was written
