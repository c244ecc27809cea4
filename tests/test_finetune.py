"""Few-label classification: the encoder + 1x1-conv head, its training modes and its folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emae.classify.config import FinetuneConfig
from emae.classify.stream import LabeledPatchStream, augment, class_weights
from emae.classify.training import train_classifier
from emae.commands.finetune import finetune
from emae.commands.pretrain import pretrain
from emae.data.labels import load_labels, read_labeled_patches
from emae.errors import EmaeError
from emae.folders.classifier import is_classifier, load_classifier
from emae.models import build_model
from emae.models.classifier import EncoderClassifier
from emae.synth.sample_data import tiny_config, write_sample_data
from emae.train.config import PretrainConfig

FAST = dict(steps=6, batch_size=8, warmup_steps=1, precision="fp32", device="cpu", view="image")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_settings):
    """Tiny sample data and an encoder pretrained on it for a few steps."""
    root = tmp_path_factory.mktemp("finetune")
    write_sample_data(root / "data", tiny_config(0))
    config = PretrainConfig(**{**tiny_settings, "steps": 4}, score="pixel")
    pretrain([root / "data" / "unlabeled" / "volume.tif"], root / "ae", config, progress=False)
    return root


@pytest.mark.parametrize("pooling", ["latent", "levels"])
def test_head_is_fully_convolutional(pooling):
    torch.manual_seed(0)
    backbone = build_model("conv-ae", channels=(8, 16), latent_channels=4, norm="batch")
    model = EncoderClassifier(backbone, n_classes=3, patch_size=32, pooling=pooling).eval()
    x = torch.rand(2, 1, 32, 32)
    assert model(x).shape == (2, 3)
    # On the patch size, the dense map has one cell equal to the patch prediction.
    torch.testing.assert_close(model.dense_logits(x)[:, :, 0, 0], model(x))
    big = torch.rand(1, 1, 96, 64)
    big[:, :, 48:] += 5.0  # a very different lower half
    probs = model.dense_probabilities(big)
    assert probs.shape == (1, 3, 96 // 4 - 8 + 1, 64 // 4 - 8 + 1)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, *probs.shape[-2:]))
    # Cell (i, j) of the dense map classifies the patch whose top-left is (4 i, 4 j), up to
    # the encoder's padding: in the map the patch's border cells see its true surroundings.
    dense, alone = model.dense_logits(big)[0, :, 2, 3], model(big[:, :, 8:40, 12:44])[0]
    # (levels: the full-resolution stem's border pixels see more of the padding)
    torch.testing.assert_close(dense, alone, atol=1e-3 if pooling == "latent" else 1e-2, rtol=0)
    other = model(big[:, :, 56:88, 12:44])[0]
    assert (dense - alone).abs().max() < (dense - other).abs().max()


def test_frozen_encoder_gets_no_gradient_and_keeps_batchnorm_statistics():
    backbone = build_model("conv-ae", channels=(8, 16), latent_channels=4, norm="batch")
    model = EncoderClassifier(backbone, n_classes=2, patch_size=32).freeze()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model.train()
    model(torch.rand(4, 1, 32, 32)).sum().backward()
    assert all(p.grad is None for p in backbone.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    for k, v in backbone.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)


def test_stream_items_are_fixed_and_balanced():
    rng = np.random.default_rng(0)
    patches = rng.random((30, 16, 16), dtype=np.float32)
    labels = np.array([0] * 24 + [1] * 4 + [2] * 2)
    stream = LabeledPatchStream(
        patches, labels, ("clean", "a", "b"), 600, seed=1, balance="oversample"
    )
    torch.testing.assert_close(stream[5][0], stream[5][0])
    counts = np.bincount([int(stream[i][1]) for i in range(600)], minlength=3)
    assert counts.min() > 150  # about 200 each, not 480 / 80 / 40
    under = LabeledPatchStream(
        patches, labels, ("clean", "a", "b"), 10, seed=1, balance="undersample"
    )
    assert len(under.pool) == 6 and np.bincount(labels[under.pool]).tolist() == [2, 2, 2]
    weights = class_weights(labels, 3)
    assert weights[2] > weights[1] > weights[0]
    assert np.isclose((weights[labels]).sum(), len(labels))


def test_artificial_items_draw_the_artifact_on_clean_patches():
    patches = np.full((4, 32, 32), 0.5, dtype=np.float32)
    labels = np.array([0, 0, 0, 1])
    stream = LabeledPatchStream(
        patches, labels, ("clean", "dust"), 200, seed=0, balance="artificial", augment_items=False
    )
    dust = [stream[i][0] for i in range(200) if int(stream[i][1]) == 1]
    changed = [float((d - 0.5).abs().max()) > 0.05 for d in dust]
    assert 0.2 < np.mean(changed) < 0.8  # about half are drawn, half are the real sample


def test_augment_keeps_shape_and_statistics():
    patch = np.random.default_rng(0).random((16, 16), dtype=np.float32)
    out = augment(patch, np.random.default_rng(1))
    assert out.shape == patch.shape and out.dtype == np.float32
    assert abs(out.mean() - patch.mean()) < 0.1


@pytest.mark.parametrize(
    ("freeze", "pooling"),
    [("frozen", "latent"), ("frozen", "levels"), ("finetune", "levels"), ("unfreeze", "latent")],
)
def test_finetune_writes_a_classifier_folder_that_predicts(tmp_path, tiny, freeze, pooling):
    config = FinetuneConfig(
        **FAST, freeze=freeze, unfreeze_after=3, balance="oversample", pooling=pooling
    )
    labels_csv = tiny / "data" / "labels.csv"
    summary = finetune(tiny / "ae", labels_csv, tmp_path / "clf", config, progress=False)
    assert summary["steps_done"] == 6 and is_classifier(tmp_path / "clf")
    clf = load_classifier(tmp_path / "clf")
    labeled = load_labels(labels_csv, patch_size=32)
    patches, _ = read_labeled_patches(labeled, 32)
    proba = clf.predict_proba(patches[:5])
    assert proba.shape == (5, len(labeled.classes))
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert list(clf.classes_) == list(labeled.classes)
    dense = clf.dense_probabilities(np.zeros((64, 48), dtype=np.uint8) + 128)
    assert dense.shape == (len(labeled.classes), 64 // 4 - 8 + 1, 48 // 4 - 8 + 1)
    assert clf.model.pooling == pooling  # saved and restored with the folder


def test_frozen_training_leaves_the_encoder_untouched(tiny):
    labeled = load_labels(tiny / "data" / "labels.csv", patch_size=32)
    patches, labels = read_labeled_patches(labeled, 32)
    config = FinetuneConfig(**FAST)
    fitted, _ = train_classifier(patches, labels, labeled.classes, config, encoder=tiny / "ae")
    from emae.folders.autoencoder import load_bundle

    original = load_bundle(tiny / "ae").model.state_dict()
    for k, v in fitted.model.backbone.state_dict().items():
        torch.testing.assert_close(v, original[k], msg=k)


def test_training_is_reproducible_and_learns_an_easy_task():
    rng = np.random.default_rng(0)
    dark = rng.normal(80, 10, (20, 32, 32))
    bright = rng.normal(170, 10, (20, 32, 32))
    patches = np.concatenate([dark, bright]).astype(np.float32)
    labels = np.array([0] * 20 + [1] * 20)
    config = FinetuneConfig(**{**FAST, "steps": 30}, patch_size=32, scratch_channels=(8, 16))
    a, _ = train_classifier(patches, labels, ("dark", "bright"), config, encoder=None)
    b, _ = train_classifier(patches, labels, ("dark", "bright"), config, encoder=None)
    np.testing.assert_array_equal(a.predict_proba(patches), b.predict_proba(patches))
    assert (a.predict(patches) == labels).mean() > 0.9
    # From scratch, the pooled features are not standardized by their random-init statistics.
    torch.testing.assert_close(a.model.feature_mean, torch.zeros_like(a.model.feature_mean))
    torch.testing.assert_close(a.model.feature_std, torch.ones_like(a.model.feature_std))


def test_bad_requests_are_refused(tmp_path, tiny):
    with pytest.raises(EmaeError, match="not an emae model folder"):
        load_classifier(tmp_path)
    with pytest.raises(EmaeError, match="autoencoder folder, not a classifier"):
        load_classifier(tiny / "ae")
    with pytest.raises(EmaeError, match="at least 2 classes"):
        EncoderClassifier(build_model("conv-ae"), n_classes=1, patch_size=64)
    with pytest.raises(Exception, match="freeze"):
        FinetuneConfig(freeze="sometimes")


def test_cli_finetune_and_its_errors(tmp_path, tiny, capsys):
    from emae.cli import main

    argv = ["-q", "finetune", str(tiny / "ae"), "--labels", str(tiny / "data" / "labels.csv")]
    argv += ["--steps", "4", "--batch-size", "8", "--device", "cpu", "--balance", "oversample"]
    assert main([*argv, "--out", str(tmp_path / "clf")]) == 0
    assert "classifier folder" in capsys.readouterr().out
    assert main([*argv, "--out", str(tmp_path / "clf")]) == 1  # exists
    assert "already exists" in capsys.readouterr().err
    assert main(["-q", "finetune", "--labels", "x.csv", "--out", str(tmp_path / "c")]) == 1
    assert "--scratch" in capsys.readouterr().err
    bad = [*argv[:-2], "--balance", "smote-ish", "--out", str(tmp_path / "d")]
    assert main(bad) == 1
    assert "balance" in capsys.readouterr().err


@pytest.mark.parametrize("balance", ["smote", "artificial", "undersample", "none"])
def test_frozen_head_trains_on_cached_features_with_every_balance(tiny, balance):
    labeled = load_labels(tiny / "data" / "labels.csv", patch_size=32)
    patches, labels = read_labeled_patches(labeled, 32)
    config = FinetuneConfig(**FAST, balance=balance)
    fitted, summary = train_classifier(
        patches, labels, labeled.classes, config, encoder=tiny / "ae"
    )
    assert summary["steps_done"] == 6
    assert fitted.predict_proba(patches[:3]).shape == (3, len(labeled.classes))


def test_cached_features_cover_the_eight_flips_and_turns():
    from emae.classify.stream import FeatureStream, dihedral

    patch = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    views = dihedral(patch)
    assert views.shape == (8, 1, 4, 4)
    assert len({v.tobytes() for v in views[:, 0]}) == 8  # all distinct for an asymmetric patch
    vectors = np.random.default_rng(0).random((8, 10, 3), dtype=np.float32)
    labels = np.array([0] * 8 + [1] * 2)
    stream = FeatureStream(vectors, labels, 2, 50, seed=0, balance="smote")
    assert np.bincount(stream.y).tolist() == [64, 64]  # 16 views of class 1 grown to 64
    with pytest.raises(EmaeError, match="not available on cached"):
        FeatureStream(vectors, labels, 2, 5, seed=0, balance="artificial")


def test_smote_needs_a_frozen_pretrained_encoder(tiny):
    config = FinetuneConfig(**FAST, balance="smote", freeze="finetune")
    patches = np.zeros((4, 32, 32), dtype=np.float32) + np.arange(4)[:, None, None]
    with pytest.raises(EmaeError, match="needs a pretrained, frozen encoder"):
        train_classifier(patches, np.array([0, 0, 1, 1]), ("a", "b"), config, encoder=tiny / "ae")


def test_evaluate_writes_metrics_predictions_and_plots(tmp_path, tiny, capsys):
    import csv
    import json

    from PIL import Image as PILImage

    from emae.cli import main

    labels_csv = tiny / "data" / "labels.csv"
    finetune(tiny / "ae", labels_csv, tmp_path / "clf", FinetuneConfig(**FAST), progress=False)
    argv = ["-q", "evaluate", str(tmp_path / "clf"), "--labels", str(labels_csv)]
    assert main([*argv, "--out", str(tmp_path / "report")]) == 0
    assert "macro-F1" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    classes = load_labels(labels_csv).classes
    assert {"macro_f1", "balanced_accuracy", "accuracy"} <= set(metrics)
    for name in classes:
        assert {"tpr", "tnr", "ppv", "npv", "f1", "roc_auc"} <= set(metrics["per_class"][name])
    with open(tmp_path / "report" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(load_labels(labels_csv).samples)
    assert {f"p_{c}" for c in classes} <= set(rows[0])
    predicted = [r["predicted"] for r in rows]
    correct = np.mean([p == r["label"] for p, r in zip(predicted, rows, strict=True)])
    assert correct == pytest.approx(metrics["accuracy"])
    for png in ("confusion.png", "roc_pr.png", "panels.png"):
        PILImage.open(tmp_path / "report" / png).verify()
    # An existing report is kept unless --overwrite; an unknown class is one error line.
    assert main([*argv, "--out", str(tmp_path / "report")]) == 1
    lines = labels_csv.read_text().splitlines()
    header, first = lines[0].split(","), lines[1].split(",")
    first[header.index("label")] = "lint"
    bad = labels_csv.with_name("unknown_class.csv")  # beside the CSV: image paths are relative
    bad.write_text("\n".join([lines[0], ",".join(first), *lines[2:]]) + "\n")
    argv = ["-q", "evaluate", str(tmp_path / "clf"), "--labels", str(bad)]
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "r2")]) == 1
    assert "unknown to the classifier" in capsys.readouterr().err


def test_interrupted_finetune_resumes_to_the_same_classifier(tmp_path, tiny, interrupted_from):
    labels_csv = tiny / "data" / "labels.csv"
    config = FinetuneConfig(**{**FAST, "steps": 8}, freeze="finetune")
    finetune(tiny / "ae", labels_csv, tmp_path / "a", config, progress=False)
    first = 5 * config.batch_size
    with interrupted_from(LabeledPatchStream, first), pytest.raises(KeyboardInterrupt):
        finetune(tiny / "ae", labels_csv, tmp_path / "b", config, progress=False)
    assert not (tmp_path / "b").exists()
    with pytest.raises(EmaeError, match="interrupted run"):
        finetune(tiny / "ae", labels_csv, tmp_path / "b", config, progress=False)
    with pytest.raises(EmaeError, match="cannot resume"):
        other = config.model_copy(update={"seed": 3})
        finetune(tiny / "ae", labels_csv, tmp_path / "b", other, resume=True, progress=False)
    finetune(tiny / "ae", labels_csv, tmp_path / "b", config, resume=True, progress=False)
    a = load_classifier(tmp_path / "a").model.state_dict()
    b = load_classifier(tmp_path / "b").model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    assert not (tmp_path / "b.training").exists()


def test_tensorboard_shows_losses_and_prediction_panels(tmp_path, tiny):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = FinetuneConfig(**FAST, tensorboard=True)
    finetune(tiny / "ae", tiny / "data" / "labels.csv", tmp_path / "clf", config, progress=False)
    events = EventAccumulator(str(tmp_path / "clf" / "tensorboard"))
    events.Reload()
    assert "train/loss" in events.Tags()["scalars"]
    assert "panels/figure" in events.Tags()["images"]


def test_validation_split_and_early_stopping():
    rng = np.random.default_rng(0)
    patches = np.concatenate([rng.normal(80, 10, (20, 32, 32)), rng.normal(170, 10, (20, 32, 32))])
    labels = np.array([0] * 20 + [1] * 20)
    config = FinetuneConfig(
        **{**FAST, "steps": 60},
        patch_size=32,
        scratch_channels=(8, 16),
        val_fraction=0.25,
        val_every=5,
        patience=2,
        lr=0.05,
    )
    _, summary = train_classifier(patches, labels, ("dark", "bright"), config, encoder=None)
    assert all("val_loss" in h for h in summary["history"])
    assert summary["best_val"] == min(h["val_loss"] for h in summary["history"])
    with pytest.raises(EmaeError, match="cannot hold out"):
        train_classifier(patches[:21], labels[:21], ("dark", "bright"), config, encoder=None)


def test_probability_maps_follow_the_image_at_full_resolution():
    rng = np.random.default_rng(0)
    dark = rng.normal(80, 10, (20, 32, 32))
    bright = rng.normal(170, 10, (20, 32, 32))
    patches = np.concatenate([dark, bright]).astype(np.float32)
    labels = np.array([0] * 20 + [1] * 20)
    config = FinetuneConfig(**{**FAST, "steps": 40}, patch_size=32, scratch_channels=(8, 16))
    clf, _ = train_classifier(patches, labels, ("dark", "bright"), config, encoder=None)
    image = np.concatenate([rng.normal(80, 10, (64, 48)), rng.normal(170, 10, (64, 48))], 1)
    maps = clf.probability_maps(image[None].astype(np.float32))
    assert maps.shape == (1, 2, 64, 96)
    np.testing.assert_allclose(maps.sum(1), 1.0, rtol=1e-5)
    assert (maps[0, 0, :, :32] > 0.5).mean() > 0.9  # dark side
    assert (maps[0, 1, :, 64:] > 0.5).mean() > 0.9  # bright side
    column = maps[0, 1].mean(0)
    switch = int(np.argmax(column > 0.5))
    # The boundary is at x = 48; patches within half a patch (16 px) of it are mixed.
    assert 48 - 16 <= switch <= 48 + 16


def test_view_auto_is_residual_for_patch_labels_with_an_autoencoder_and_image_otherwise():
    auto = FinetuneConfig()
    assert auto.view == "auto"
    assert auto.resolved(pretrained=True, kind="patch").view == "residual"
    assert auto.resolved(pretrained=True, kind="image").view == "image"
    assert auto.resolved(pretrained=False, kind="patch").view == "image"
    assert FinetuneConfig(view="image").resolved(pretrained=True).view == "image"
    with pytest.raises(EmaeError, match="resolve view 'auto' first"):
        auto.input_size(64)
    assert auto.resolved(pretrained=True).input_size(64) == 64 + 2 * 16


def test_finetune_by_default_trains_on_the_residual_and_records_it(tmp_path, tiny):
    config = FinetuneConfig(**{**FAST, "view": "auto", "context": 8})
    summary = finetune(tiny / "ae", tiny / "data" / "labels.csv", tmp_path / "clf", config)
    clf = load_classifier(tmp_path / "clf")
    assert summary["view"] == "residual" and clf.model.input_size == 32 + 2 * 8
    run = json.loads((tmp_path / "clf" / "config.json").read_text())["run"]
    assert run["view"] == "residual"  # the folder says what was trained
