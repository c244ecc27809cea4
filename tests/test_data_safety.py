"""The bad-input corpus: every refusal is one line and exit status 1, and no input changes.

Each case runs one ``emae`` command, in process, on a user folder written with other tools
(tifffile, zarr, h5py, numpy), a tiny autoencoder and a tiny classifier. It asserts the
command's exit status, that it printed exactly one line, ``emae: error: ...`` matching the
case's pattern, and that the sha256 of every file of the user folder and of both model folders
is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import zarr

from emae.classify.config import FinetuneConfig
from emae.cli import main
from emae.commands.finetune import finetune
from emae.commands.pretrain import pretrain
from emae.synth.tissue import make_volume, to_uint8
from emae.train.config import PretrainConfig

DETECT = ["--chunk", "40", "--tile", "48", "--overlap", "8", "--scheduler", "synchronous"]


def _ngff(path: Path, array: np.ndarray, chunks: tuple[int, ...]) -> None:
    """An OME-Zarr image written with zarr alone, as another tool would (no emae mark)."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", data=array, chunks=chunks)
    axes = [{"name": a, "type": "space"} for a in "zyx"[-array.ndim :]]
    scale = [{"type": "scale", "scale": [1.0] * array.ndim}]
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": axes,
            "datasets": [{"path": "0", "coordinateTransformations": scale}],
        }
    ]


def _labels(path: Path, image: str, n: int = 12) -> Path:
    rows = ["image,x,y,z,label"]
    for i in range(n):
        label = "dark" if i % 2 else "clean"
        rows.append(f"{image},{20 + 3 * i},{30 + 2 * (i % 5)},{i % 2},{label}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_settings) -> Path:
    root = tmp_path_factory.mktemp("safety")
    user = root / "user"
    user.mkdir()
    volume = to_uint8(make_volume((2, 80, 72), seed=3))
    tifffile.imwrite(user / "stack.tif", volume, photometric="minisblack")
    tifffile.imwrite(user / "copy.tif", volume, photometric="minisblack")
    tifffile.imwrite(user / "other.tif", volume[0], photometric="minisblack")
    tifffile.imwrite(user / "u16.tif", volume.astype(np.uint16) * 257, photometric="minisblack")
    tifffile.imwrite(user / "f64.tif", volume / 255.0, photometric="minisblack")
    tifffile.imwrite(user / "tiny.tif", volume[0, :16, :16], photometric="minisblack")
    tifffile.imwrite(user / "rgb.tif", np.zeros((40, 40, 3), np.uint8), photometric="rgb")
    nan = volume[0].astype(np.float32)
    nan[5, 5] = np.nan
    tifffile.imwrite(user / "nan.tif", nan, photometric="minisblack")
    tifffile.imwrite(user / "flat.tif", np.full((2, 80, 72), 7, np.uint8))
    (user / "cut.tif").write_bytes((user / "stack.tif").read_bytes()[:3000])
    (user / "empty.tif").write_bytes(b"")
    tifffile.imwrite(user / "pixel.tif", np.full((1, 1), 9, np.uint8))
    (user / "ft.yaml").write_text("batch_size: 8\n")
    (user / "notes.txt").write_text("keep me\n")
    (user / "page.html").write_text("<p>my page</p>\n")
    (user / "m_scores.csv").write_text("sample,value\n1,2\n")
    tifffile.imwrite(user / "m.tif", volume[0], photometric="minisblack")
    (user / "sections").mkdir()
    for z in range(2):
        tifffile.imwrite(user / "sections" / f"s{z}.tif", volume[z], photometric="minisblack")
    for name in ("raw.zarr", "copy.zarr"):
        _ngff(user / name, volume, (1, 40, 36))
    holes = zarr.open_array(
        str(user / "holes.zarr"),
        mode="w",
        shape=volume.shape,
        chunks=(1, 40, 36),
        dtype=np.uint8,
        zarr_format=2,
    )
    holes[0] = volume[0]  # section 1 never written
    with h5py.File(user / "two.h5", "w") as f:
        f["a"] = volume
        f["b"] = volume
    for name in ("mine", "mine.zarr", "report"):
        (user / name).mkdir()
        (user / name / "thesis.txt").write_text("years of work\n")
    _labels(user / "labels.csv", "stack.tif")
    _labels(user / "labels_u16.csv", "u16.tif")
    (user / "bad_labels.csv").write_text("image,x,label\nstack.tif,5,clean\n")
    # Its own model, not a copy of tiny_model: the --rescale test needs the model's
    # normalization to be the one fitted on this stack.
    settings = PretrainConfig(**tiny_settings, score="pixel", norm="none")
    pretrain([user / "stack.tif"], root / "run", settings, progress=False)
    config = FinetuneConfig(steps=2, batch_size=4, device="cpu", precision="fp32")
    finetune(root / "run", user / "labels.csv", root / "clf", config, progress=False)
    # Damaged emae outputs (outside the fingerprinted folders: the cases' commands own them).
    emae = root / "emae"
    shutil.copytree(root / "run", emae / "tampered")
    weights = emae / "tampered" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-4:] = bytes(4)  # other numbers, same valid header
    weights.write_bytes(bytes(data))
    assert (
        main(
            [
                "-q",
                "detect",
                str(root / "run"),
                str(user / "stack.tif"),
                "--out",
                str(emae / "det.zarr"),
                *DETECT,
            ]
        )
        == 0
    )
    marker = emae / "det.zarr" / "emae_done" / "z1.npz"  # section 1's manifest
    marker.write_bytes(marker.read_bytes()[:100])
    (emae / "ae.training").mkdir()
    (emae / "ae.training" / "config.json").write_text('{"config": {"steps"')
    return root


def _fingerprint(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in ("user", "run", "clf")
        for p in sorted((root / folder).rglob("*"))
        if p.is_file()
    }


Argv = Callable[[Path, Path], list[str]]  # (world, tmp_path) -> argv

# (id, argv, pattern of the one error line)
CASES: list[tuple[str, Argv, str]] = [
    # user data lost
    (
        "score-over-its-input",
        lambda w, t: [
            "score",
            f"{w}/run",
            f"{w}/user/copy.tif",
            "--out",
            f"{w}/user/copy.tif",
            "--overwrite",
        ],
        "the output is the input",
    ),
    (
        "score-over-its-input-no-overwrite",
        lambda w, t: ["score", f"{w}/run", f"{w}/user/copy.tif", "--out", f"{w}/user/copy.tif"],
        "the output is the input",
    ),
    (
        "detect-over-its-input",
        lambda w, t: [
            "detect",
            f"{w}/run",
            f"{w}/user/copy.zarr",
            "--out",
            f"{w}/user/copy.zarr",
            "--overwrite",
            *DETECT,
        ],
        "the output is the input",
    ),
    (
        "detect-over-a-user-zarr",
        lambda w, t: [
            "detect",
            f"{w}/run",
            f"{w}/user/stack.tif",
            "--out",
            f"{w}/user/raw.zarr",
            "--overwrite",
            *DETECT,
        ],
        "is not an output of emae detect",
    ),
    (
        "detect-over-a-user-folder",
        lambda w, t: [
            "detect",
            f"{w}/run",
            f"{w}/user/stack.tif",
            "--out",
            f"{w}/user/mine.zarr",
            "--overwrite",
            *DETECT,
        ],
        "is not an output of emae detect",
    ),
    (
        "detect-inside-its-input",
        lambda w, t: [
            "detect",
            f"{w}/run",
            f"{w}/user/raw.zarr",
            "--out",
            f"{w}/user/raw.zarr/maps.zarr",
            *DETECT,
        ],
        "lies inside the input",
    ),
    (
        "detect-into-the-model",
        lambda w, t: [
            "detect",
            f"{w}/run",
            f"{w}/user/stack.tif",
            "--out",
            f"{w}/run/maps.zarr",
            *DETECT,
        ],
        "lies inside the input",
    ),
    (
        "score-over-a-user-zarr",
        lambda w, t: [
            "score",
            f"{w}/run",
            f"{w}/user/stack.tif",
            "--out",
            f"{w}/user/raw.zarr",
            "--overwrite",
        ],
        "not an anomaly map written by emae score",
    ),
    (
        "score-over-a-user-tiff",
        lambda w, t: [
            "score",
            f"{w}/run",
            f"{w}/user/stack.tif",
            "--out",
            f"{w}/user/other.tif",
            "--overwrite",
        ],
        "not an anomaly map written by emae score",
    ),
    (
        "score-over-a-user-csv",
        lambda w, t: [
            "score",
            f"{w}/run",
            f"{w}/user/stack.tif",
            "--out",
            f"{w}/user/m.tif",
            "--overwrite",
        ],
        "not an anomaly map|not an emae scores CSV",
    ),
    (
        "score-inside-its-input-folder",
        lambda w, t: [
            "score",
            f"{w}/run",
            f"{w}/user/sections",
            "--out",
            f"{w}/user/sections/map.tif",
        ],
        "lies inside the input",
    ),
    (
        "finetune-over-its-encoder",
        lambda w, t: [
            "finetune",
            f"{w}/run",
            "--labels",
            f"{w}/user/labels.csv",
            "--out",
            f"{w}/run",
            "--overwrite",
        ],
        "the output is the input",
    ),
    (
        "finetune-around-its-labels",
        lambda w, t: [
            "finetune",
            f"{w}/run",
            "--labels",
            f"{w}/user/labels.csv",
            "--out",
            f"{w}/user",
            "--overwrite",
        ],
        "the output contains the input",
    ),
    (
        "finetune-over-a-user-folder",
        lambda w, t: [
            "finetune",
            f"{w}/run",
            "--labels",
            f"{w}/user/labels.csv",
            "--out",
            f"{w}/user/mine",
            "--overwrite",
            "--steps",
            "1",
        ],
        "not an emae model folder",
    ),
    (
        "pretrain-over-its-input",
        lambda w, t: [
            "pretrain",
            f"{w}/user/stack.tif",
            "--out",
            f"{w}/user/stack.tif",
            "--overwrite",
        ],
        "the output is the input",
    ),
    (
        "pretrain-over-a-user-folder",
        lambda w, t: [
            "pretrain",
            f"{w}/user/stack.tif",
            "--out",
            f"{w}/user/mine",
            "--overwrite",
            "--steps",
            "1",
        ],
        "not an emae model folder",
    ),
    (
        "evaluate-over-its-labels",
        lambda w, t: [
            "evaluate",
            f"{w}/clf",
            "--labels",
            f"{w}/user/labels.csv",
            "--out",
            f"{w}/user/labels.csv",
            "--overwrite",
        ],
        "the output is the input",
    ),
    (
        "evaluate-over-a-user-folder",
        lambda w, t: [
            "evaluate",
            f"{w}/clf",
            "--labels",
            f"{w}/user/labels.csv",
            "--out",
            f"{w}/user/report",
            "--overwrite",
        ],
        "not an emae report folder",
    ),
    (
        "report-over-a-user-page",
        lambda w, t: ["report", f"{w}/run", "--out", f"{w}/user/page.html", "--overwrite"],
        "not an emae report",
    ),
    (
        "compare-over-its-labels",
        lambda w, t: [
            "compare",
            "--labels",
            f"{w}/user/labels.csv",
            "--encoder",
            f"{w}/run",
            "--methods",
            "head",
            "--out",
            f"{w}/user/labels.csv",
        ],
        "the output is the input",
    ),
    # silent wrong results
    (
        "score-uint16-under-uint8",
        lambda w, t: ["score", f"{w}/run", f"{w}/user/u16.tif", "--out", f"{t}/m.tif"],
        "pixels are uint16 but the model .* uint8.*--rescale",
    ),
    (
        "score-float64-under-uint8",
        lambda w, t: ["score", f"{w}/run", f"{w}/user/f64.tif", "--out", f"{t}/m.tif"],
        "pixels are float64 but the model",
    ),
    (
        "score-unwritten-chunks",
        lambda w, t: ["score", f"{w}/run", f"{w}/user/holes.zarr", "--out", f"{t}/m.tif"],
        "chunk\\(s\\) of the zarr array were never written",
    ),
    (
        "detect-unwritten-chunks",
        lambda w, t: [
            "detect",
            f"{w}/run",
            f"{w}/user/holes.zarr",
            "--out",
            f"{t}/m.zarr",
            *DETECT,
        ],
        "never written",
    ),
    (
        "detect-uint16-under-uint8",
        lambda w, t: ["detect", f"{w}/run", f"{w}/user/u16.tif", "--out", f"{t}/m.zarr", *DETECT],
        "pixels are uint16",
    ),
    (
        "detect-classifier-uint16",
        lambda w, t: ["detect", f"{w}/clf", f"{w}/user/u16.tif", "--out", f"{t}/m.zarr", *DETECT],
        "pixels are uint16",
    ),
    (
        "finetune-uint16-labels",
        lambda w, t: [
            "finetune",
            f"{w}/run",
            "--labels",
            f"{w}/user/labels_u16.csv",
            "--out",
            f"{t}/c",
            "--steps",
            "1",
        ],
        "pixels are uint16",
    ),
    (
        "evaluate-uint16-labels",
        lambda w, t: [
            "evaluate",
            f"{w}/clf",
            "--labels",
            f"{w}/user/labels_u16.csv",
            "--out",
            f"{t}/r",
        ],
        "pixels are uint16",
    ),
    (
        "compare-uint16-labels",
        lambda w, t: [
            "compare",
            "--labels",
            f"{w}/user/labels_u16.csv",
            "--encoder",
            f"{w}/run",
            "--methods",
            "head",
            "--folds",
            "2",
            "--budgets",
            "all",
            "--out",
            f"{t}/cmp",
        ],
        "pixels are uint16",
    ),
    (
        "score-tampered-weights",
        lambda w, t: ["score", f"{w}/emae/tampered", f"{w}/user/stack.tif", "--out", f"{t}/m.tif"],
        "model.safetensors does not match the checksum",
    ),
    (
        "detect-truncated-marker",
        lambda w, t: [
            "detect",
            f"{w}/run",
            f"{w}/user/stack.tif",
            "--out",
            f"{w}/emae/det.zarr",
            *DETECT,
        ],
        "unreadable done marker .* delete it",
    ),
    (
        "pretrain-resume-corrupt-state",
        lambda w, t: ["pretrain", f"{w}/user/stack.tif", "--out", f"{w}/emae/ae", "--resume"],
        "config.json: not readable as JSON",
    ),
    (
        "pretrain-one-pixel",
        lambda w, t: ["pretrain", f"{w}/user/pixel.tif", "--out", f"{t}/ae"],
        "smaller than the 64x64 training patches|expected a 2D",
    ),
    (
        "finetune-bad-flag-with-config",
        lambda w, t: [
            "finetune",
            f"{w}/run",
            "--labels",
            f"{w}/user/labels.csv",
            "--config",
            f"{w}/user/ft.yaml",
            "--steps",
            "0",
            "--out",
            f"{t}/c",
        ],
        "^emae: error: invalid flag --steps: .*got 0",
    ),
    (
        "score-nan-rescaled",
        lambda w, t: ["score", f"{w}/run", f"{w}/user/nan.tif", "--rescale", "--out", f"{t}/m.tif"],
        "NaN or infinite",
    ),
    # input the readers refuse
    (
        "score-missing-model",
        lambda w, t: ["score", f"{w}/nowhere", f"{w}/user/stack.tif", "--out", f"{t}/m.tif"],
        "nowhere",
    ),
    (
        "score-missing-input",
        lambda w, t: ["score", f"{w}/run", f"{w}/user/nowhere.tif", "--out", f"{t}/m.tif"],
        "no such file",
    ),
    (
        "score-empty-file",
        lambda w, t: ["score", f"{w}/run", f"{w}/user/empty.tif", "--out", f"{t}/m.tif"],
        "empty",
    ),
    (
        "score-truncated-tiff",
        lambda w, t: ["score", f"{w}/run", f"{w}/user/cut.tif", "--out", f"{t}/m.tif"],
        "truncated|not a readable TIFF",
    ),
    (
        "score-rgb",
        lambda w, t: ["score", f"{w}/run", f"{w}/user/rgb.tif", "--out", f"{t}/m.tif"],
        "channels or samples",
    ),
    (
        "score-unsupported-type",
        lambda w, t: ["score", f"{w}/run", f"{w}/user/notes.txt", "--out", f"{t}/m.tif"],
        "unsupported file type",
    ),
    (
        "score-bad-map-suffix",
        lambda w, t: ["score", f"{w}/run", f"{w}/user/stack.tif", "--out", f"{t}/m.png"],
        "must end in .tif",
    ),
    (
        "score-hdf5-ambiguous",
        lambda w, t: ["score", f"{w}/run", f"{w}/user/two.h5", "--out", f"{t}/m.tif"],
        "name a dataset",
    ),
    ("info-truncated", lambda w, t: ["info", f"{w}/user/cut.tif"], "truncated|not a readable TIFF"),
    (
        "detect-bad-suffix",
        lambda w, t: ["detect", f"{w}/run", f"{w}/user/stack.tif", "--out", f"{t}/m.tif", *DETECT],
        "must be a .zarr store",
    ),
    (
        "detect-sections-too-small",
        lambda w, t: ["detect", f"{w}/run", f"{w}/user/tiny.tif", "--out", f"{t}/m.zarr", *DETECT],
        "smaller than",
    ),
    (
        "detect-scale-out-of-range",
        lambda w, t: [
            "detect",
            f"{w}/run",
            f"{w}/user/stack.tif",
            "--out",
            f"{t}/m.zarr",
            "--scale",
            "3",
            *DETECT,
        ],
        "scale level 3 out of range",
    ),
    (
        "pretrain-constant-image",
        lambda w, t: ["pretrain", f"{w}/user/flat.tif", "--out", f"{t}/ae", "--steps", "1"],
        "valid patches",
    ),
    (
        "finetune-missing-labels",
        lambda w, t: [
            "finetune",
            f"{w}/run",
            "--labels",
            f"{w}/user/nowhere.csv",
            "--out",
            f"{t}/c",
        ],
        "nowhere.csv",
    ),
    ("labels-bad-columns", lambda w, t: ["labels", f"{w}/user/bad_labels.csv"], "bad_labels.csv"),
    (
        "finetune-steps-zero",
        lambda w, t: [
            "finetune",
            f"{w}/run",
            "--labels",
            f"{w}/user/labels.csv",
            "--out",
            f"{t}/c",
            "--steps",
            "0",
        ],
        "steps",
    ),
]


@pytest.mark.parametrize(("argv", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(world, tmp_path, capsys, argv, pattern):
    import re

    before = _fingerprint(world)
    capsys.readouterr()
    status = main(["-q", *argv(world, tmp_path)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 1, err
    assert len(lines) == 1 and lines[0].startswith("emae: error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in err
    assert _fingerprint(world) == before


def test_the_corpus_is_large():
    assert len(CASES) >= 40


def test_rescale_is_the_documented_way_to_score_other_dtypes(world, tmp_path):
    out = tmp_path / "m.tif"
    argv = ["-q", "score", f"{world}/run", f"{world}/user/u16.tif", "--out", str(out)]
    assert main([*argv, "--rescale"]) == 0
    rescaled = tifffile.imread(out)
    assert (
        main(
            [
                "-q",
                "score",
                f"{world}/run",
                f"{world}/user/stack.tif",
                "--out",
                f"{tmp_path}/ref.tif",
            ]
        )
        == 0
    )
    reference = tifffile.imread(tmp_path / "ref.tif")
    # uint16 = 257 x uint8: its own percentiles (sampled, so not exactly the model's) map it
    # onto nearly the same normalized intensities, so nearly the same map.
    assert np.abs(rescaled - reference).max() < 0.05 * np.ptp(reference)
    assert np.corrcoef(rescaled.ravel(), reference.ravel())[0, 1] > 0.999


def test_overwrite_replaces_what_emae_wrote(world, tmp_path):
    for out in (tmp_path / "m.tif", tmp_path / "z.zarr"):
        argv = ["-q", "score", f"{world}/run", f"{world}/user/stack.tif", "--out", str(out)]
        assert main(argv) == 0
        assert main([*argv, "--overwrite"]) == 0
    store = tmp_path / "d.zarr"
    argv = ["-q", "detect", f"{world}/run", f"{world}/user/stack.tif", "--out", str(store), *DETECT]
    assert main(argv) == 0
    other = [a if a != "8" else "4" for a in argv]  # another overlap
    assert main(other) == 1  # another detection is replaced only with --overwrite
    assert main([*other, "--overwrite"]) == 0
    assert json.loads((store / "emae_run.json").read_text())["overlap"] == 4


def test_a_killed_writers_temporary_is_removed_by_the_next_write(world, tmp_path):
    import subprocess
    import sys

    from emae.io.atomic import _host

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    pid = int(dead.stdout)
    leftover = tmp_path / f".m.tif.tmp-{_host()}-{pid}-0123456789ab"
    running = tmp_path / f".m.tif.tmp-{_host()}-{os.getpid()}-0123456789ab"
    elsewhere = tmp_path / f".m.tif.tmp-otherhost-{pid}-0123456789ab"
    mine = tmp_path / ".m.tif.tmp-notes"
    for path in (leftover, running, elsewhere, mine):
        path.write_bytes(b"partial")
    argv = ["-q", "score", f"{world}/run", f"{world}/user/stack.tif", "--out", f"{tmp_path}/m.tif"]
    assert main(argv) == 0
    assert not leftover.exists()
    assert running.exists() and elsewhere.exists() and mine.exists()


@pytest.mark.parametrize(
    ("command", "advice"),
    [("pretrain", "add --resume"), ("detect", "rerun the same command"), ("score", "rerun")],
)
def test_ctrl_c_says_how_to_continue(monkeypatch, capsys, command, advice):
    import emae.cli

    def interrupted(args):
        raise KeyboardInterrupt

    parser = emae.cli.build_parser()
    monkeypatch.setattr(emae.cli, "build_parser", lambda: parser)
    for action in parser._subparsers._group_actions[0].choices.values():
        action.set_defaults(func=interrupted)
    argv = {
        "pretrain": ["pretrain", "x.tif", "--out", "ae"],
        "detect": ["detect", "ae", "x.tif", "--out", "m.zarr"],
        "score": ["score", "ae", "x.tif", "--out", "m.tif"],
    }[command]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.startswith("emae: interrupted; ") and advice in err


def test_a_detect_stopped_by_a_bad_option_does_not_block_the_corrected_rerun(world, tmp_path):
    out = tmp_path / "m.zarr"
    base = ["-q", "detect", f"{world}/run", f"{world}/user/stack.tif", "--out", str(out)]
    bad = [*base, "--chunk", "40", "--tile", "8", "--overlap", "8", "--scheduler", "synchronous"]
    assert main(bad) == 1  # refused before anything is written
    assert not out.exists()
    # A run whose every chunk failed (here: its markers removed) left a store of other settings.
    assert main([*base, *DETECT]) == 0
    for marker in (out / "emae_done").iterdir():
        marker.unlink()
    other = [a if a != "8" else "4" for a in [*base, *DETECT]]
    assert main(other) == 0  # no --overwrite needed: no chunk of it was finished
    assert json.loads((out / "emae_run.json").read_text())["overlap"] == 4
    assert main([a if a != "4" else "6" for a in other]) == 1  # finished chunks need it


def test_nan_pixels_are_named_with_the_file_and_position(tmp_path):
    from emae.errors import EmaeError
    from emae.io import open_image

    array = np.zeros((2, 30, 30), np.float32)
    array[1, 12, 7] = np.inf
    tifffile.imwrite(tmp_path / "f.tif", array, photometric="minisblack")
    image = open_image(tmp_path / "f.tif")
    with pytest.raises(EmaeError, match=r"f\.tif: holds NaN .*section 1, y=12, x=7"):
        image.check_finite(image[1, 10:20, 5:15], 1, 10, 5)
