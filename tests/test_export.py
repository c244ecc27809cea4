"""``export_onnx``: onnxruntime reproduces every registered model and a classifier, read back by
the ``onnx`` and ``onnxruntime`` packages; metadata round trips; refusals are one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from emae.commands.export import export_onnx, is_emae_onnx
from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError
from emae.folders.autoencoder import load_bundle, save_bundle
from emae.folders.classifier import FittedClassifier, load_classifier, save_classifier
from emae.models import PCAAutoencoder, available_models, build_model, model_spec
from emae.models.classifier import EncoderClassifier
from emae.synth.tissue import make_section

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

#: onnxruntime against PyTorch, on outputs of magnitude about 1 (float32 rounding is ~1e-6).
ATOL = 1e-4
NORMALIZER = PercentileNormalizer(12.0, 240.0, low=1.0, high=99.0, source_dtype="uint8")
CLIPPING = PercentileNormalizer(30.0, 200.0, source_dtype="uint8", clip=True)
TINY = {"channels": (8, 16), "latent_channels": 4}


def _sections(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.stack([make_section((size, size), seed=seed + i) for i in range(n)])


def _model(name: str, kwargs: dict) -> torch.nn.Module:
    """A small model with BatchNorm statistics of a batch of sections, or PCA fitted on them."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(name, **kwargs)
        if model_spec(name).fitted_in_closed_form:
            return model.fit_patches(_sections(4, 48))
        for norm in model.modules():  # running statistics = those of one batch
            if isinstance(norm, torch.nn.BatchNorm2d):
                norm.momentum = None
                norm.reset_running_stats()
        size = kwargs.get("patch_size") or 40
        model.train()(torch.from_numpy(_sections(4, size)[:, None] * 3 - 1))
    return model.eval()


#: Every registered model, plus batch norm, a clipping normalizer and a vector latent.
CASES = {
    **{
        name: (name, {"patch_size": 8, "n_components": 6} if name == "pca" else TINY, NORMALIZER)
        for name in available_models()
    },
    "conv-ae-batchnorm": ("conv-ae", {**TINY, "norm": "batch"}, CLIPPING),
    "vae-vector": (
        "vae",
        {**TINY, "latent": "vector", "patch_size": 16, "latent_dim": 6, "norm": "batch"},
        NORMALIZER,
    ),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``{case: (model folder, .onnx file, export summary)}`` for every case of ``CASES``."""
    root = tmp_path_factory.mktemp("export")
    out = {}
    for case, (name, kwargs, normalizer) in CASES.items():
        folder = save_bundle(
            root / case,
            model=_model(name, kwargs),
            model_name=name,
            model_kwargs=kwargs,
            normalizer=normalizer,
            config={},
            scoring={"score": "pixel", "reduce": "mean"},
        )
        summary = export_onnx(folder, root / f"{case}.onnx")
        out[case] = (folder, root / f"{case}.onnx", summary)
    return out


def _props(path: Path) -> dict[str, str]:
    """The metadata of an ONNX file, as the onnx package reads it."""
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _raw(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """Raw uint8-range intensities, as float32, a little beyond the normalizer's range."""
    return np.random.default_rng(seed).uniform(0, 255, (n, 1, h, w)).astype(np.float32)


def _sizes(model: torch.nn.Module, min_size: int) -> list[tuple[int, int, int]]:
    """(N, H, W) to check: two batch sizes, and several image sizes where H, W are free."""
    if model.latent == "vector":
        return [(1, model.patch_size, model.patch_size), (3, model.patch_size, model.patch_size)]
    m = model.downsample_factor  # PCA: any size from min_size; conv: padded to multiples of m
    if isinstance(model, PCAAutoencoder):
        return [(1, min_size, min_size + 1), (3, 64, 29), (2, 40, 51)]
    return [(1, m, m), (3, 9 * m + 3, 5 * m - 1), (2, 6 * m, 7 * m)]


@pytest.mark.parametrize("case", list(CASES))
def test_onnxruntime_reproduces_the_model(exported, case):
    folder, path, summary = exported[case]
    onnx.checker.check_model(str(path), full_check=True)
    bundle = load_bundle(folder)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["raw"]
    assert [o.name for o in session.get_outputs()] == ["reconstruction", "squared_error"]
    worst = 0.0
    for i, (n, h, w) in enumerate(_sizes(bundle.model, int(summary["emae.min_size"]))):
        raw = _raw(n, h, w, seed=i)
        x = torch.from_numpy(bundle.normalizer(raw))
        with torch.no_grad():
            recon = bundle.model(x)
        recon_onnx, error_onnx = session.run(None, {"raw": raw})
        assert recon_onnx.shape == error_onnx.shape == (n, 1, h, w)
        np.testing.assert_allclose(recon_onnx, recon.numpy(), atol=ATOL, rtol=0)
        np.testing.assert_allclose(error_onnx, ((x - recon) ** 2).numpy(), atol=ATOL, rtol=0)
        worst = max(worst, float(np.abs(recon_onnx - recon.numpy()).max()))
    assert summary["max_abs_diff"] <= ATOL and summary["emae.kind"] == "autoencoder"
    print(f"{case}: max |onnxruntime - torch| = {worst:.2g}")


def test_metadata_round_trips(exported):
    folder, path, summary = exported["conv-ae"]
    props = _props(path)
    assert props["emae.kind"] == "autoencoder" and props["emae.model"] == "conv-ae"
    assert json.loads(props["emae.data.normalization"]) == NORMALIZER.to_dict()
    assert json.loads(props["emae.model_kwargs"]) == load_bundle(folder).model_kwargs
    assert json.loads(props["emae.anomaly.scores"]) == {"score": "pixel", "reduce": "mean"}
    assert props["emae.version"] and props["emae.min_size"] == "4"
    assert "not in the graph" in props["emae.outputs"]
    assert {k: v for k, v in summary.items() if k.startswith("emae.")} == props
    assert "clipped" in _props(exported["conv-ae-batchnorm"][1])["emae.normalization_formula"]
    assert "posterior mean" in exported["vae"][2]["emae.outputs"]
    assert "16x16 patches only" in exported["vae-vector"][2]["emae.input"]
    assert is_emae_onnx(path) and not is_emae_onnx(folder / "config.json")


# --- classifiers -----------------------------------------------------------------------------


def _classifier(path: Path, backbone: str, pooling: str = "latent", features=()) -> Path:
    kwargs = {"patch_size": 8, "n_components": 6} if backbone == "pca" else TINY
    model = EncoderClassifier(
        _model(backbone, kwargs), n_classes=3, patch_size=16, pooling=pooling, n_extra=len(features)
    )
    with torch.no_grad():
        patches = torch.from_numpy(NORMALIZER(_sections(6, 16) * 255)[:, None])
        model.set_feature_statistics(model.global_features(patches)[:, :, 0, 0])
    fitted = FittedClassifier(
        model=model.eval(),
        classes=("burnt", "clean", "fold"),
        normalizer=NORMALIZER,
        backbone_name=backbone,
        backbone_kwargs=kwargs,
        feature_names=tuple(features),
        extra_mean=np.zeros(len(features)) if features else None,
        extra_std=np.ones(len(features)) if features else None,
    )
    return save_classifier(path, fitted, config={})


@pytest.mark.parametrize(
    ("backbone", "pooling"), [("conv-ae", "latent"), ("vae", "levels"), ("pca", "latent")]
)
def test_classifier_probabilities_are_reproduced(tmp_path, backbone, pooling):
    folder = _classifier(tmp_path / "clf", backbone, pooling)
    summary = export_onnx(folder, tmp_path / "clf.onnx")
    onnx.checker.check_model(str(tmp_path / "clf.onnx"), full_check=True)
    fitted = load_classifier(folder)
    session = ort.InferenceSession(str(tmp_path / "clf.onnx"), providers=["CPUExecutionProvider"])
    worst = 0.0
    for n in (1, 4):
        raw = _raw(n, 16, 16, seed=n)
        probs = session.run(None, {"raw": raw})[0]
        assert probs.shape == (n, 3)
        np.testing.assert_allclose(probs, fitted.predict_proba(raw[:, 0]), atol=ATOL, rtol=0)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
        worst = max(worst, float(np.abs(probs - fitted.predict_proba(raw[:, 0])).max()))
    props = _props(tmp_path / "clf.onnx")
    assert props["emae.kind"] == summary["emae.kind"] == "classifier"
    assert json.loads(props["emae.classes"]) == ["burnt", "clean", "fold"]
    assert props["emae.patch_size"] == "16" and props["emae.model"] == backbone
    assert json.loads(props["emae.data.normalization"]) == NORMALIZER.to_dict()
    print(f"classifier {backbone}/{pooling}: max |onnxruntime - torch| = {worst:.2g}")


def test_a_trained_run_exports(tmp_path, tiny_settings):
    """Folders written by the commands themselves: ``pretrain`` then ``finetune``."""
    from emae.classify.config import FinetuneConfig
    from emae.commands.finetune import finetune
    from emae.commands.pretrain import pretrain
    from emae.data.labels import LabeledSample, write_labels
    from emae.synth.sample_data import tiny_config, write_sample_data
    from emae.train.config import PretrainConfig

    write_sample_data(tmp_path / "data", tiny_config(0))
    volume = tmp_path / "data" / "unlabeled" / "volume.tif"
    config = PretrainConfig(**tiny_settings, score="pixel")
    pretrain([volume], tmp_path / "ae", config, progress=False)
    assert export_onnx(tmp_path / "ae", tmp_path / "ae.onnx")["max_abs_diff"] <= ATOL
    spots = [(x, y) for x in (20, 40) for y in (20, 40)]
    samples = [LabeledSample(str(volume), x, y, 0, c) for x, y in spots for c in ("a", "b")]
    write_labels(tmp_path / "labels.csv", samples)
    fine = FinetuneConfig(steps=2, batch_size=4, warmup_steps=1, precision="fp32")
    finetune(tmp_path / "ae", tmp_path / "labels.csv", tmp_path / "clf", fine, progress=False)
    summary = export_onnx(tmp_path / "clf", tmp_path / "clf.onnx")
    assert summary["emae.kind"] == "classifier" and summary["max_abs_diff"] <= ATOL


# --- refusals and overwriting ----------------------------------------------------------------


def _one_line(match: str, *args, **kwargs) -> None:
    with pytest.raises(EmaeError, match=match) as info:
        export_onnx(*args, **kwargs)
    assert "\n" not in str(info.value)


def test_refusals_are_one_line_and_write_nothing(tmp_path, exported):
    folder = exported["conv-ae"][0]
    clf = _classifier(tmp_path / "clf", "conv-ae", features=("feat_area",))
    _one_line("feature columns feat_area", clf, tmp_path / "c.onnx")
    _one_line("lies inside the input", folder, folder / "model.onnx")
    _one_line("must be an .onnx file", folder, tmp_path / "model.pt")
    _one_line("opset must be 13 to 20", folder, tmp_path / "a.onnx", opset=9)
    _one_line("not found", tmp_path / "missing", tmp_path / "a.onnx")
    (tmp_path / "data.onnx").write_bytes(b"not emae's")
    _one_line("already exists", folder, tmp_path / "data.onnx")
    _one_line(
        "is not an ONNX model exported by emae", folder, tmp_path / "data.onnx", overwrite=True
    )
    assert (tmp_path / "data.onnx").read_bytes() == b"not emae's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf", "data.onnx"]


def test_overwrite_replaces_only_an_emae_export(tmp_path, exported):
    out = tmp_path / "model.onnx"
    export_onnx(exported["conv-ae"][0], out)
    _one_line("already exists", exported["pca"][0], out)
    export_onnx(exported["pca"][0], out, overwrite=True, opset=13)
    model = onnx.load(str(out))
    assert _props(out)["emae.model"] == "pca"
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [13]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_a_graph_that_differs_from_the_model_is_not_written(tmp_path, exported, monkeypatch):
    from emae.commands import export

    forward = export._Graph.forward
    monkeypatch.setattr(export._Graph, "forward", lambda self, raw: forward(self, raw + 1))
    _one_line("differs from the model by", exported["conv-ae"][0], tmp_path / "a.onnx")
    assert not list(tmp_path.iterdir())


def test_missing_onnx_is_one_line(tmp_path, exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    _one_line(r"pip install 'emae\[onnx\]'", exported["conv-ae"][0], tmp_path / "a.onnx")
