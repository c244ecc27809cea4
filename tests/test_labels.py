"""Labels CSV: parsing, every validation error, reading labeled pixels and writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from emae.data.labels import LabeledSample, load_labels, read_labeled_patches, write_labels
from emae.errors import EmaeError


@pytest.fixture
def folder(tmp_path) -> Path:
    """``img/a.tif`` (64x80 uint16), ``stack.zarr`` (3x50x60 uint8), ``obj/o1.tif``, ``o2.tif``."""
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    (tmp_path / "obj").mkdir()
    tifffile.imwrite(tmp_path / "img/a.tif", rng.integers(0, 4000, (64, 80), dtype=np.uint16))
    stack = zarr.create_array(
        tmp_path / "stack.zarr", shape=(3, 50, 60), chunks=(1, 16, 16), dtype="u1"
    )
    stack[:] = rng.integers(0, 255, (3, 50, 60), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "obj/o1.tif", rng.integers(0, 255, (40, 40), dtype=np.uint8))
    tifffile.imwrite(tmp_path / "obj/o2.tif", rng.integers(0, 255, (48, 44), dtype=np.uint8))
    return tmp_path


def _csv(folder: Path, *lines: str, name: str = "labels.csv") -> Path:
    path = folder / name
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


PATCHES = (
    "image,x,y,z,label,group,feat_thickness",
    "img/a.tif,40,30,,scratch,g1,1.5",
    "",
    "stack.zarr,30,25,2,clean,g1,2",
    "stack.zarr,10,12,0,fold,,-0.25",
)


def test_patch_labels_are_parsed(folder):
    labels = load_labels(_csv(folder, *PATCHES), patch_size=16)
    assert labels.kind == "patch" and labels.features == ("feat_thickness",)
    assert labels.classes == ("clean", "fold", "scratch")
    assert labels.class_counts() == {"clean": 1, "fold": 1, "scratch": 1}
    first, second, third = labels.samples
    assert first == LabeledSample(str(folder / "img/a.tif"), 40, 30, None, "scratch", "g1", (1.5,))
    assert (second.z, second.group, third.group, third.features) == (2, "g1", None, (-0.25,))
    assert list(labels.label_indices()) == [2, 0, 1]


def test_relative_paths_resolve_against_the_csv_folder(folder):
    (folder / "sub").mkdir()
    absolute = folder / "obj/o1.tif"
    path = _csv(folder, "image,label", "../obj/o2.tif,b", f"{absolute},a", name="sub/labels.csv")
    labels = load_labels(path, classes=["b", "a"])
    assert [Path(s.image).resolve() for s in labels.samples] == [folder / "obj/o2.tif", absolute]
    assert labels.kind == "image" and labels.classes == ("b", "a")


def test_read_labeled_patches_centres_and_crops(folder):
    labels = load_labels(_csv(folder, *PATCHES))
    patches, classes = read_labeled_patches(labels, 16)
    assert patches.shape == (3, 16, 16) and patches.dtype == np.uint16
    assert list(classes) == [2, 0, 1]
    a = tifffile.imread(folder / "img/a.tif")
    np.testing.assert_array_equal(patches[0], a[30 - 8 : 30 + 8, 40 - 8 : 40 + 8])
    stack = zarr.open_array(folder / "stack.zarr")[:]
    np.testing.assert_array_equal(patches[1], stack[2, 25 - 8 : 25 + 8, 30 - 8 : 30 + 8])
    objects = load_labels(_csv(folder, "image,label", "obj/o1.tif,x", "obj/o2.tif,y"))
    crops, classes = read_labeled_patches(objects, 32)
    o2 = tifffile.imread(folder / "obj/o2.tif")
    np.testing.assert_array_equal(crops[1], o2[8:40, 6:38])
    assert list(classes) == [0, 1]


def test_write_labels_round_trips(folder):
    labels = load_labels(_csv(folder, *PATCHES))
    out = write_labels(folder / "copy.csv", labels)
    assert out.read_text().splitlines()[:2] == [
        "image,x,y,z,label,group,feat_thickness",
        "img/a.tif,40,30,,scratch,g1,1.5",
    ]
    assert load_labels(out) == labels
    with pytest.raises(EmaeError, match="already exists"):
        write_labels(folder / "copy.csv", labels)
    samples = [LabeledSample("obj/o1.tif", None, None, None, "a")]
    write_labels(folder / "copy.csv", samples, overwrite=True)
    assert (folder / "copy.csv").read_text() == "image,label\nobj/o1.tif,a\n"
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name]
    with pytest.raises(EmaeError, match="cannot mix"):
        write_labels(folder / "mixed.csv", [*samples, LabeledSample("b", 1, 2, None, "a")])


def test_check_images_false_skips_the_files(folder):
    labels = load_labels(_csv(folder, "image,x,y,label", "missing.tif,5,5,a"), check_images=False)
    assert labels.samples[0].image == str(folder / "missing.tif")


ERRORS = [
    ((), r"labels.csv is empty"),
    (("image,x,y,label",), r"labels.csv: no samples, only a header"),
    (("image,x,label", "img/a.tif,1,a"), r"labels.csv line 1: missing required columns \['y'\]"),
    (("image,y,x", "img/a.tif,1,2"), r"labels.csv line 1: missing required columns \['label'\]"),
    (("image,label,note", "obj/o1.tif,a,hi"), r"labels.csv line 1: unknown columns \['note'\]"),
    (("image,label,label", "obj/o1.tif,a,b"), r"labels.csv line 1: repeated columns \['label'\]"),
    (
        ("image,label", "obj/o1.tif,a", "obj/nope.tif,a"),
        r"labels.csv line 3: image 'nope.tif' not found \(looked in .*obj\)",
    ),
    (
        ("image,x,y,label", "img/a.tif,12.5,3,a"),
        r"labels.csv line 2: x must be a non-negative integer pixel index, got '12.5'",
    ),
    (
        ("image,x,y,label", "img/a.tif,40,30,a", "img/a.tif,4,-3,a"),
        r"labels.csv line 3: y must be a non-negative integer pixel index, got '-3'",
    ),
    (("image,x,y,label", "img/a.tif,,3,a"), r"labels.csv line 2: empty x"),
    (
        ("image,x,y,label", "img/a.tif,80,3,a"),
        r"labels.csv line 2: x=80, y=3 outside 'img/a.tif' of 64x80 \(height x width\)",
    ),
    (
        ("image,x,y,label", "img/a.tif,75,30,a"),
        r"labels.csv line 2: a patch of size 16 centred at x=75, y=30 crosses the border of "
        r"'img/a.tif' of 64x80",
    ),
    (
        ("image,x,y,z,label", "stack.zarr,5,5,3,a"),
        r"labels.csv line 2: z=3 outside the stack 'stack.zarr' of sections 0..2",
    ),
    (
        ("image,x,y,z,label", "img/a.tif,40,30,0,a"),
        r"labels.csv line 2: z=0 given for the 2D image 'img/a.tif'; leave z empty",
    ),
    (
        ("image,x,y,z,label", "stack.zarr,20,20,,a"),
        r"labels.csv line 2: z is required for 'stack.zarr', a stack of 3 sections",
    ),
    (
        ("image,x,y,label", "img/a.tif,40,30,scratch", "img/a.tif,40,30,dust"),
        r"labels.csv line 3: unknown class 'dust'; expected one of",
    ),
    (
        ("image,x,y,label", "img/a.tif,40,30,scratch"),
        r"labels.csv: no samples for classes \['fold'\] of \['scratch', 'fold'\]",
    ),
    (
        ("image,x,y,label,feat_a", "img/a.tif,40,30,scratch,1", "img/a.tif,40,30,fold,nan"),
        r"labels.csv line 3: feature feat_a must be a finite number, got 'nan'",
    ),
    (
        ("image,x,y,label,feat_a", "img/a.tif,40,30,scratch,thick"),
        r"labels.csv line 2: feature feat_a must be a number, got 'thick'",
    ),
    (("image,x,y,label", "img/a.tif,40,30"), r"labels.csv line 2: expected 4 fields, got 3"),
    (("image,label", ",a"), r"labels.csv line 2: empty image"),
    (
        ("image,label", "stack.zarr,a"),
        r"labels.csv line 2: whole-image samples need 2D images, 'stack.zarr' is \(3, 50, 60\)",
    ),
    (
        ("image,label", "obj/o2.tif,a"),
        r"labels.csv line 2: image 'obj/o2.tif' of 48x44 is smaller than patch_size=64",
    ),
]


@pytest.mark.parametrize(("lines", "message"), ERRORS)
def test_errors_name_the_file_the_line_and_the_problem(folder, lines, message):
    path = _csv(folder, *lines)
    patch_size = 64 if "obj/o2" in "".join(lines) else 16
    classes = ["scratch", "fold"] if "scratch" in "".join(lines) else None
    with pytest.raises(EmaeError, match=message) as info:
        load_labels(path, patch_size=patch_size, classes=classes)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(EmaeError, match=r"nope.csv: labels file not found"):
        load_labels(tmp_path / "nope.csv")
