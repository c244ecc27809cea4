"""The residual view: a CNN trained on what a pretrained autoencoder could not reconstruct."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emae.classify.config import FinetuneConfig
from emae.classify.estimator import PatchClassifier
from emae.cli import main
from emae.commands.compare import compare
from emae.commands.evaluate import evaluate
from emae.commands.finetune import finetune
from emae.commands.pretrain import pretrain
from emae.data.labels import load_labels, read_labeled_patches
from emae.errors import EmaeError
from emae.folders.classifier import load_classifier
from emae.models import build_model
from emae.models.classifier import EncoderClassifier
from emae.models.residual import ResidualBackbone
from emae.synth.sample_data import tiny_config, write_sample_data
from emae.synth.tissue import make_section, to_uint8
from emae.train.config import PretrainConfig

AE = {"channels": [8, 16], "latent_channels": 4, "norm": "batch"}
SCRATCH = {"channels": [8, 16], "latent_channels": 16, "norm": "batch"}
FAST = dict(
    steps=6,
    batch_size=8,
    warmup_steps=1,
    precision="fp32",
    device="cpu",
    scratch_channels=(8, 16),
    view="residual",
    context=8,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_settings):
    """Tiny sample data and an autoencoder pretrained on it for a few steps."""
    root = tmp_path_factory.mktemp("residual")
    write_sample_data(root / "data", tiny_config(0))
    config = PretrainConfig(**{**tiny_settings, "steps": 4}, score="pixel")
    pretrain([root / "data" / "unlabeled" / "volume.tif"], root / "ae", config, progress=False)
    return root


def _backbone(context: int = 8) -> ResidualBackbone:
    torch.manual_seed(0)
    return ResidualBackbone("conv-ae", AE, SCRATCH, context=context)


def test_the_residual_is_the_input_minus_the_reconstruction_inside_the_context():
    backbone = _backbone()
    x = torch.rand(2, 1, 48, 48)
    expected = (x - backbone.autoencoder.eval()(x))[..., 8:40, 8:40]
    torch.testing.assert_close(backbone.residual(x), expected)
    # Sides that are no multiple of the autoencoder's downsampling are padded for it, then cut.
    assert backbone.residual(torch.rand(1, 1, 45, 51)).shape == (1, 1, 29, 35)
    assert backbone.features(x).shape == (2, 16, 8, 8)
    with pytest.raises(EmaeError, match="not larger than twice the context 8"):
        backbone.residual(torch.rand(1, 1, 16, 40))


def test_with_image_the_cnn_sees_the_patch_beside_its_residual():
    torch.manual_seed(0)
    backbone = ResidualBackbone("conv-ae", AE, SCRATCH, context=8, with_image=True)
    assert backbone.backbone.in_channels == 2
    x = torch.rand(2, 1, 48, 48)
    assert backbone.features(x).shape == (2, 16, 8, 8)
    # The second channel is the residual: the first is the patch without its context.
    seen = []
    backbone.backbone.encoder.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    backbone.features(x)
    torch.testing.assert_close(seen[0][:, :1], x[..., 8:40, 8:40])
    torch.testing.assert_close(seen[0][:, 1:], backbone.residual(x))


def test_only_the_cnn_learns_and_the_autoencoder_stays_in_eval_mode():
    backbone = _backbone()
    model = EncoderClassifier(backbone, n_classes=3, patch_size=32).train()
    before = {k: v.clone() for k, v in backbone.autoencoder.state_dict().items()}
    assert not backbone.autoencoder.training and backbone.backbone.training
    assert model.input_size == 48
    model(torch.rand(4, 1, 48, 48)).sum().backward()
    assert all(p.grad is None for p in backbone.autoencoder.parameters())
    assert all(p.grad is not None for p in backbone.backbone.encoder.parameters())
    for k, v in backbone.autoencoder.state_dict().items():  # BatchNorm statistics too
        torch.testing.assert_close(v, before[k], msg=k)


@pytest.mark.parametrize("pooling", ["latent", "levels"])
def test_the_dense_map_covers_the_image_like_a_classifier_without_context(pooling):
    model = EncoderClassifier(_backbone(), n_classes=3, patch_size=32, pooling=pooling).eval()
    plain = EncoderClassifier(build_model("conv-ae", **SCRATCH), n_classes=3, patch_size=32)
    image = torch.rand(1, 1, 96, 64)
    assert model.dense_logits(image).shape == plain.eval().dense_logits(image).shape
    # Cell (i, j) classifies the patch whose top-left is (4 i, 4 j), read with its context
    # (levels: the full-resolution stem's border pixels see more of the padding).
    patch = torch.nn.functional.pad(image, (8, 8, 8, 8), mode="reflect")[..., 16:64, 20:68]
    torch.testing.assert_close(
        model.dense_logits(image)[0, :, 4, 5],
        model(patch)[0],
        atol=2e-3 if pooling == "latent" else 2e-2,
        rtol=0,
    )
    assert model(patch).shape == (1, 3)


def test_autoencoders_of_other_inputs_are_refused():
    with pytest.raises(EmaeError, match="inpainting model or a codec"):
        ResidualBackbone("inpainting-ae", {}, SCRATCH)
    with pytest.raises(EmaeError, match="context must be an int >= 0"):
        ResidualBackbone("conv-ae", AE, SCRATCH, context=-1)


def test_finetune_residual_folder_predicts_the_same_after_loading(tmp_path, tiny):
    labels_csv = tiny / "data" / "labels.csv"
    config = FinetuneConfig(**FAST)
    summary = finetune(tiny / "ae", labels_csv, tmp_path / "clf", config, progress=False)
    assert summary["steps_done"] == 6
    clf = load_classifier(tmp_path / "clf")
    assert isinstance(clf.model.backbone, ResidualBackbone) and clf.model.input_size == 48
    labeled = load_labels(labels_csv, patch_size=32)
    patches, _ = read_labeled_patches(labeled, 32, context=8)
    assert patches.shape[1:] == (48, 48)
    again = load_classifier(tmp_path / "clf")
    np.testing.assert_allclose(clf.predict_proba(patches), again.predict_proba(patches))
    image = patches[0].repeat(2, axis=0)
    assert clf.dense_probabilities(image).shape[0] == len(clf.classes)
    metrics = evaluate(tmp_path / "clf", labels_csv, tmp_path / "eval")
    assert 0 <= metrics["macro_f1"] <= 1


def test_residual_view_needs_an_autoencoder_and_patches_with_context(tmp_path, tiny):
    with pytest.raises(EmaeError, match="needs a pretrained autoencoder"):
        PatchClassifier(None, FinetuneConfig(**FAST)).fit(np.zeros((4, 48, 48)), [0, 1, 0, 1])
    with pytest.raises(EmaeError, match=r"patches must be 48x48 \(32 and 8 of context\)"):
        PatchClassifier(tiny / "ae", FinetuneConfig(**FAST)).fit(
            np.zeros((4, 32, 32), np.uint8), [0, 1, 0, 1]
        )


def test_cli_finetune_view_residual(tmp_path, tiny, capsys):
    code = main(
        ["finetune", str(tiny / "ae"), "--labels", str(tiny / "data" / "labels.csv"),
         "--out", str(tmp_path / "clf"), "--view", "residual", "--context", "8",
         "--steps", "4", "--batch-size", "8", "--device", "cpu"]
    )  # fmt: skip
    assert code == 0 and "residual view" in capsys.readouterr().out
    assert load_classifier(tmp_path / "clf").model.input_size == 32 + 2 * 8


def test_compare_runs_cnn_residual_beside_the_methods_without_context(tmp_path, tiny):
    config = FinetuneConfig(**{**FAST, "view": "image"})
    summary = compare(
        tiny / "data" / "labels.csv",
        tmp_path / "cmp",
        encoder=tiny / "ae",
        methods=["cnn-scratch", "cnn-residual", "svm-features"],
        folds=2,
        budgets=[2],
        config=config,
        seed=0,
    )
    assert {"cnn-scratch", "cnn-residual", "svm-features"} <= set(summary["methods"])


def test_context_across_the_border_is_mirrored_and_inside_it_is_read(tmp_path):
    import tifffile

    from emae.data.labels import LabeledSample, write_labels

    image = np.arange(64 * 80, dtype=np.uint16).reshape(64, 80)
    tifffile.imwrite(tmp_path / "img.tif", image)
    samples = [LabeledSample(str(tmp_path / "img.tif"), x, y, None, "a") for x, y in
               [(16, 16), (40, 32), (62, 46)]]  # fmt: skip
    write_labels(tmp_path / "labels.csv", samples)
    labeled = load_labels(tmp_path / "labels.csv", patch_size=32)
    patches, _ = read_labeled_patches(labeled, 32, context=8)
    padded = np.pad(image, 24, mode="reflect")
    for patch, s in zip(patches, samples, strict=True):
        top, left = s.y - 24 + 24, s.x - 24 + 24  # the window's corner in the padded image
        np.testing.assert_array_equal(patch, padded[top : top + 48, left : left + 48])
    assert patches.dtype == np.uint16


def test_class_maps_follow_the_precision_and_stay_close_to_fp32(tmp_path, tiny):
    """``probability_maps`` (what ``emae detect`` maps) in bf16 autocast and channels-last where
    the CPU has bf16: probabilities within a few hundredths of fp32, the same class almost
    everywhere; the mapper of detect passes its precision on."""
    from emae.runtime import select_precision
    from emae.volume.chunks import Mapper

    finetune(
        tiny / "ae",
        tiny / "data" / "labels.csv",
        tmp_path / "clf",
        FinetuneConfig(**{**FAST, "steps": 20}),
        progress=False,
    )
    clf = load_classifier(tmp_path / "clf")
    tiles = np.stack([to_uint8(make_section((96, 80), seed=s)) for s in range(2)])
    exact = clf.probability_maps(tiles)
    fast = Mapper(classifier=clf, precision="auto")(tiles)
    assert fast.shape == exact.shape == (2, len(clf.classes), 96, 80)
    assert fast.dtype == np.float32
    np.testing.assert_allclose(fast.sum(axis=1), 1.0, rtol=1e-5)
    assert np.abs(fast - exact).max() < 0.05
    assert (fast.argmax(axis=1) == exact.argmax(axis=1)).mean() > 0.97
    np.testing.assert_array_equal(clf.probability_maps(tiles, "fp32"), exact)
    if select_precision(torch.device("cpu"), "auto") is not None:
        assert not np.array_equal(fast, exact)  # bf16 did run
    with pytest.raises(EmaeError, match="precision must be auto, fp32 or bf16"):
        clf.probability_maps(tiles, "fp16")
