"""Semi-supervised classifier training: views, the FixMatch loss, and the runs that use them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emae.classify.config import FinetuneConfig
from emae.classify.semi import WithUnlabeled, consistency_loss, random_views
from emae.classify.stream import LabeledPatchStream, augment, dihedral
from emae.classify.training import train_classifier
from emae.commands.finetune import finetune
from emae.errors import EmaeError

FAST = dict(steps=6, batch_size=8, warmup_steps=1, precision="fp32", device="cpu")


def _asymmetric(n: int, side: int) -> torch.Tensor:
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(1))


def test_weak_views_are_flips_turns_or_nothing_on_small_patches():
    # Patches under 8 pixels are not shifted: the weak view is then a pure flip / turn.
    x = _asymmetric(16, 7)
    anyway = random_views(x, torch.Generator().manual_seed(0), strong=False, orientation="any")
    candidates = dihedral(x[:, 0].numpy())  # (8, N, 7, 7)
    seen = set()
    for i in range(len(x)):
        errors = np.abs(candidates[:, i] - anyway[i, 0].numpy()).max(axis=(1, 2))
        assert errors.min() < 1e-5, errors
        seen.add(int(errors.argmin()))
    assert len(seen) > 2  # several of the 8 are drawn
    fixed = random_views(x, torch.Generator().manual_seed(0), strong=False, orientation="fixed")
    torch.testing.assert_close(fixed, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("side", [32, 28])
@pytest.mark.parametrize("autocast", [False, True])
def test_fixed_weak_views_are_whole_pixel_shifts_within_an_eighth(side, autocast):
    x = _asymmetric(12, side)
    r = side // 8
    # Training runs under bf16 autocast: the views must stay on the pixel grid there too.
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        views = random_views(x, torch.Generator().manual_seed(2), strong=False, orientation="fixed")
    assert views.dtype == torch.float32
    shifts = set()
    inner = slice(r, side - r)
    for i in range(len(x)):
        found = [
            (dy, dx)
            for dy in range(-r, r + 1)
            for dx in range(-r, r + 1)
            if torch.allclose(
                views[i, 0, inner, inner],
                x[i, 0, r + dy : side - r + dy, r + dx : side - r + dx],
                atol=1e-5,
            )
        ]
        assert len(found) == 1, i
        shifts.add(found[0])
    assert len(shifts) > 3


def test_views_are_seeded_and_strong_views_blank_a_square():
    x = _asymmetric(6, 32)
    a = random_views(x, torch.Generator().manual_seed(5), strong=True, orientation="any")
    b = random_views(x, torch.Generator().manual_seed(5), strong=True, orientation="any")
    c = random_views(x, torch.Generator().manual_seed(6), strong=True, orientation="any")
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    assert a.shape == x.shape and torch.isfinite(a).all()
    for view in a[:, 0]:  # cutout: a 16 x 16 square of one value
        _, counts = torch.unique(view, return_counts=True)
        assert counts.max() >= 16 * 16
    with pytest.raises(EmaeError, match="orientation"):
        random_views(x, torch.Generator(), strong=False, orientation="upright")


def test_consistency_loss_uses_confident_weak_predictions_only():
    weak = torch.tensor([[5.0, 0.0, 0.0], [0.2, 0.1, 0.0], [0.0, 0.0, 6.0]])
    strong = torch.randn(3, 3, generator=torch.Generator().manual_seed(0))
    loss, used = consistency_loss(weak, strong, confidence=0.9)
    expected = (F.cross_entropy(strong[[0, 2]], torch.tensor([0, 2]), reduction="sum")) / 3
    torch.testing.assert_close(loss, expected)
    assert float(used) == pytest.approx(2 / 3)
    none, used = consistency_loss(weak, strong, confidence=1.0)
    assert float(none) == 0.0 and float(used) == 0.0


def test_unlabeled_items_are_fixed_and_normalized():
    patches, labels = np.zeros((4, 8, 8)), np.array([0, 0, 1, 1])
    labeled = LabeledPatchStream(patches, labels, ("a", "b"), 10, seed=0)
    pool = np.arange(20 * 64, dtype=np.uint16).reshape(20, 8, 8)
    stream = WithUnlabeled(labeled, pool, lambda a: a.astype(np.float32) / 1000, 3, seed=0)
    x, y, u = stream[4]
    torch.testing.assert_close((x, y), labeled[4])
    assert u.shape == (3, 1, 8, 8) and u.dtype == torch.float32
    for view in u[:, 0].numpy():  # a normalized pool patch, whole
        j = round(float(view[0, 0]) * 1000) // 64
        np.testing.assert_allclose(view, pool[j] / 1000, rtol=1e-6)
    torch.testing.assert_close(stream[4][2], u)
    assert len(stream) == 10
    with pytest.raises(EmaeError, match="non-empty"):
        WithUnlabeled(labeled, pool[:0], float, 3, seed=0)


def test_shift_augmentation_keeps_the_orientation():
    patch = np.zeros((16, 16), dtype=np.float32)
    patch[2:6, 3:5] = 1.0  # an upright bar near the top left
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = augment(patch, rng, "fixed")
        ys, xs = np.nonzero(out > 0.5)
        assert np.ptp(ys) > np.ptp(xs)  # still upright: never turned
        assert abs(ys.min() - 2) <= 2 and abs(xs.min() - 3) <= 2  # moved by at most 16 / 8


def _two_blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Dark and bright noise patches (labels 0, 1), uint16."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    patches = rng.normal(80 + 90 * labels[:, None, None], 10, (n, 32, 32))
    return np.clip(patches, 0, 255).astype(np.uint16), labels


def test_semi_supervised_training_is_reproducible_and_uses_the_unlabeled_patches(tmp_path):
    x, y = _two_blobs(4, 0)
    pool, _ = _two_blobs(64, 1)
    config = FinetuneConfig(
        **{**FAST, "steps": 12},
        patch_size=32,
        scratch_channels=(8, 16),
        confidence=0.6,  # two classes: any prediction is at least 0.5 sure
        val_every=4,
    )
    classes = ("dark", "bright")
    a, summary = train_classifier(x, y, classes, config, encoder=None, unlabeled=pool)
    b, _ = train_classifier(x, y, classes, config, encoder=None, unlabeled=pool)
    np.testing.assert_array_equal(a.predict_proba(pool), b.predict_proba(pool))
    assert all("pseudo_labeled" in h and "unlabeled_loss" in h for h in summary["history"])
    used = [h["pseudo_labeled"] for h in summary["history"]]
    assert all(0 <= u <= 1 for u in used) and used[-1] > 0, used
    plain, _ = train_classifier(x, y, classes, config, encoder=None)
    assert not np.allclose(plain.predict_proba(pool), a.predict_proba(pool))
    off = config.model_copy(update={"unlabeled_weight": 0.0})
    same, _ = train_classifier(x, y, classes, off, encoder=None, unlabeled=pool)
    np.testing.assert_array_equal(same.predict_proba(pool), plain.predict_proba(pool))


def test_semi_supervised_bad_input_is_refused():
    x, y = _two_blobs(4, 0)
    config = FinetuneConfig(**FAST, patch_size=32, scratch_channels=(8, 16))
    with pytest.raises(EmaeError, match="like the labeled ones"):
        train_classifier(x, y, ("a", "b"), config, encoder=None, unlabeled=np.zeros((5, 16, 16)))
    with pytest.raises(EmaeError, match="no feature columns"):
        train_classifier(x, y, ("a", "b"), config, encoder=None, extra=np.ones((4, 1)), unlabeled=x)


def test_finetune_draws_unlabeled_patches_from_images(tmp_path, capsys):
    from emae.cli import main
    from emae.synth.sample_data import tiny_config, write_sample_data

    write_sample_data(tmp_path / "data", tiny_config(0))
    labels = tmp_path / "data" / "labels.csv"
    volume = tmp_path / "data" / "unlabeled" / "volume.tif"
    config = FinetuneConfig(
        **FAST, patch_size=32, scratch_channels=(8, 16), unlabeled_patches=40, unlabeled_ratio=2
    )
    summary = finetune(None, labels, tmp_path / "clf", config, unlabeled=[volume], progress=False)
    assert summary["unlabeled"] == [str(volume)]
    assert "pseudo_labeled" in summary["history"][-1]
    argv = ["-q", "finetune", "--scratch", "--labels", str(labels), "--steps", "2"]
    argv += ["--batch-size", "4", "--device", "cpu", "--out", str(tmp_path / "cli")]
    assert main([*argv, "--unlabeled", str(tmp_path / "missing.tif")]) == 1
    assert "missing.tif" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists() and not (tmp_path / "cli.training").exists()
    bad = FinetuneConfig(**FAST, patch_size=32, label_smoothing=0.2)  # refused by training
    with pytest.raises(EmaeError, match="pseudo-label"):
        finetune(None, labels, tmp_path / "bad", bad, unlabeled=[volume], progress=False)
    assert not (tmp_path / "bad.training").exists()
    with pytest.raises(EmaeError, match="labels file not found"):
        finetune(None, tmp_path / "none.csv", tmp_path / "bad", config, progress=False)
    assert not (tmp_path / "bad.training").exists()
    assert summary["unlabeled_patches"] == 40
    capsys.readouterr()
    assert main([*argv, "--unlabeled", str(volume), "--orientation", "fixed"]) == 0
    assert "20000 unlabeled patches" in capsys.readouterr().out
    training = json.loads((tmp_path / "cli" / "training.json").read_text())
    assert training["unlabeled"] == [str(volume)] and training["unlabeled_patches"] == 20000


def test_a_confidence_that_label_smoothing_makes_unreachable_is_refused():
    x, y = _two_blobs(4, 0)
    config = FinetuneConfig(
        **FAST, patch_size=32, scratch_channels=(8, 16), label_smoothing=0.2, confidence=0.95
    )
    with pytest.raises(EmaeError, match="no patch would get a pseudo-label"):
        train_classifier(x, y, ("a", "b"), config, encoder=None, unlabeled=x)


def test_interrupted_semi_supervised_run_resumes_to_the_same_classifier(tmp_path, interrupted_from):
    from emae.folders.classifier import load_classifier
    from emae.synth.sample_data import tiny_config, write_sample_data

    write_sample_data(tmp_path / "data", tiny_config(0))
    labels = tmp_path / "data" / "labels.csv"
    volume = [tmp_path / "data" / "unlabeled" / "volume.tif"]
    config = FinetuneConfig(
        **{**FAST, "steps": 8},
        patch_size=32,
        scratch_channels=(8, 16),
        unlabeled_patches=40,
        unlabeled_ratio=2,
        confidence=0.5,
    )
    finetune(None, labels, tmp_path / "a", config, unlabeled=volume, progress=False)
    with interrupted_from(WithUnlabeled, 5 * config.batch_size), pytest.raises(KeyboardInterrupt):
        finetune(None, labels, tmp_path / "b", config, unlabeled=volume, progress=False)
    with pytest.raises(EmaeError, match="cannot resume"):
        finetune(None, labels, tmp_path / "b", config, resume=True, progress=False)
    finetune(None, labels, tmp_path / "b", config, unlabeled=volume, resume=True, progress=False)
    a = load_classifier(tmp_path / "a").model.state_dict()
    b = load_classifier(tmp_path / "b").model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
