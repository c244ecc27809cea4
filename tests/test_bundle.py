"""The trained-model folder: exact round trips, partial updates, bad folders, and no unpickling."""

from __future__ import annotations

import hashlib
import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

import emae
from emae.anomaly.scores import FeatureStatistics
from emae.anomaly.thresholds import Threshold
from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError
from emae.folders.autoencoder import Bundle, load_bundle, save_bundle, update_bundle
from emae.models import available_models, build_model, model_spec
from emae.synth.tissue import make_section

KWARGS = {"channels": (8, 16), "latent_channels": 8}
NORMALIZER = PercentileNormalizer(12.0, 240.0, low=1.0, high=99.0, source_dtype="uint8")
CONFIG = {"model": {"name": "conv-ae"}, "train": {"steps": 10, "lr": 0.001}, "tags": ["a", "b"]}
THRESHOLD = Threshold(0.25, "fpr", score="feature/p99", target_fpr=0.01, n_normal=500)


def small_model(name: str = "conv-ae", seed: int = 0, **kwargs) -> torch.nn.Module:
    """A small model with weights drawn from ``seed``; torch's global generator is left as is."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_model(name, **{**KWARGS, **kwargs})


def save(path: Path, name: str = "conv-ae", **extra) -> Path:
    return save_bundle(
        path,
        model=small_model(name),
        model_name=name,
        model_kwargs=KWARGS,
        normalizer=NORMALIZER,
        config=CONFIG,
        **extra,
    )


def files(path: Path) -> set[str]:
    return {p.name for p in path.iterdir()}


def images() -> torch.Tensor:
    return torch.from_numpy(np.stack([make_section((40, 56), seed=1)])[:, None])


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in available_models()
        if not (model_spec(n).fitted_in_closed_form or model_spec(n).codec)
    ],
)  # PCA's folder round trip: test_pca.py; the codecs': test_compress.py
def test_every_model_round_trips_exactly(tmp_path, name):
    model = small_model(name, norm="batch")  # running statistics are saved too
    model.train()(images())  # update them away from their initial values
    patches = np.stack([make_section((32, 32), seed=i) for i in range(4)])
    stats = FeatureStatistics().fit(model, patches)
    scoring = {"score": "feature", "reduce": "p99"}
    kwargs = {**KWARGS, "norm": "batch"}
    path = save_bundle(
        tmp_path / "run",
        model=model,
        model_name=name,
        model_kwargs=kwargs,
        normalizer=NORMALIZER,
        config=CONFIG,
        scoring=scoring,
        arrays=stats.to_arrays(),
        threshold=THRESHOLD,
    )
    assert files(path) == {
        "config.json",
        "model.safetensors",
        "normalization.json",
        "scoring.json",
        "scoring.safetensors",
        "threshold.json",
    }
    bundle = load_bundle(path)
    assert isinstance(bundle, Bundle)
    assert (bundle.model_name, bundle.emae_version) == (name, emae.__version__)
    assert bundle.model_kwargs == {"channels": [8, 16], "latent_channels": 8, "norm": "batch"}
    assert (bundle.normalizer, bundle.config, bundle.scoring) == (NORMALIZER, CONFIG, scoring)
    assert bundle.threshold == THRESHOLD.to_dict()
    assert not bundle.model.training
    assert all(p.device.type == "cpu" for p in bundle.model.parameters())
    for key, tensor in model.state_dict().items():
        assert torch.equal(bundle.model.state_dict()[key], tensor), key
    with torch.no_grad():
        assert torch.equal(bundle.model(images()), model.eval()(images()))
    loaded = FeatureStatistics.from_arrays(bundle.arrays)
    x = np.stack([make_section((48, 40), seed=2)])
    assert np.array_equal(loaded.anomaly_map(bundle.model, x), stats.anomaly_map(model, x))
    header = json.loads((path / "config.json").read_text())
    assert header == {
        "emae_version": emae.__version__,
        "kind": "autoencoder",
        "format": 1,
        "model": name,
        "model_kwargs": bundle.model_kwargs,
        "run": CONFIG,
        "checksums": {
            f: hashlib.sha256((path / f).read_bytes()).hexdigest()
            for f in ("model.safetensors", "scoring.safetensors")
        },
    }


def test_optional_files_are_written_only_when_given(tmp_path):
    path = save(tmp_path / "run")
    assert files(path) == {"config.json", "model.safetensors", "normalization.json"}
    bundle = load_bundle(path)
    assert (bundle.scoring, bundle.arrays, bundle.threshold) == ({}, {}, None)


def test_saving_follows_the_overwrite_rules(tmp_path):
    (tmp_path / "empty").mkdir()
    save(tmp_path / "empty")  # an empty folder may be filled
    path = save(tmp_path / "run", threshold=THRESHOLD)
    with pytest.raises(EmaeError, match=r"run already exists; pass --overwrite"):
        save(path)
    save(path, overwrite=True)
    assert "threshold.json" not in files(path)  # replaced as a whole
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(EmaeError, match=r"folder .*missing does not exist"):
        save(tmp_path / "missing" / "run")


def test_update_rewrites_only_the_given_files(tmp_path):
    path = save(tmp_path / "run", scoring={"score": "pixel"})
    weights = (path / "model.safetensors").read_bytes()
    update_bundle(path, threshold=Threshold.fixed(3.0, score="pixel/max"))
    bundle = load_bundle(path)
    assert bundle.threshold == {
        "value": 3.0,
        "method": "fixed",
        "score": "pixel/max",
        "n_normal": 0,
        "n_anomalous": 0,
    }
    assert bundle.scoring == {"score": "pixel"}
    update_bundle(path, scoring={"score": "ssim"}, arrays={"a": np.arange(3.0)})
    bundle = load_bundle(path)
    assert bundle.scoring == {"score": "ssim"} and bundle.threshold["value"] == 3.0
    assert list(bundle.arrays) == ["a"] and np.array_equal(bundle.arrays["a"], np.arange(3.0))
    assert (path / "model.safetensors").read_bytes() == weights
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with pytest.raises(EmaeError, match=r"nothing to update"):
        update_bundle(path)
    with pytest.raises(EmaeError, match=r"method must be one of"):
        update_bundle(path, scoring={"score": "feature"}, threshold={"value": 1, "method": "?"})
    with pytest.raises(EmaeError, match=r"not an emae model folder"):
        update_bundle(tmp_path, threshold=THRESHOLD)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"config": {"x": np.float32(1)}}, r"config must be plain JSON"),
        ({"config": {"x": float("nan")}}, r"config must be plain JSON"),
        ({"model_kwargs": {**KWARGS, "latent_channels": 4}}, r"tensor '.*' has shape"),
        ({"model_name": "vae"}, r"model 'vae': tensor 'encoder.head.weight' has shape"),
        ({"model": small_model(norm="batch")}, r"do not match the model: missing tensors \[\]"),
        ({"model_name": "ica"}, r"unknown model 'ica'"),
        ({"threshold": {"value": 1.0}}, r"threshold fields: .* missing \['method'\]"),
        ({"scoring": ["feature"]}, r"scoring must be a dict"),
        ({"arrays": {"labels": np.array(["a"])}}, r"numeric arrays, got 'labels'"),
        ({"normalizer": {"low_value": 0}}, r"normalizer must be a PercentileNormalizer"),
    ],
)
def test_bad_parts_are_refused_before_anything_is_written(tmp_path, extra, message):
    args = {
        "model": small_model(),
        "model_name": "conv-ae",
        "model_kwargs": KWARGS,
        "normalizer": NORMALIZER,
        "config": CONFIG,
        **extra,
    }
    with pytest.raises(EmaeError, match=message):
        save_bundle(tmp_path / "run", **args)
    assert list(tmp_path.iterdir()) == []


# --- bad folders ---------------------------------------------------------------------------------


def edit_header(path: Path, **changes) -> None:
    header = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**header, **changes}))


def without_checksums(path: Path) -> Path:
    """The folder as emae wrote it before checksums: its files are loaded unchecked."""
    header = json.loads((path / "config.json").read_text())
    del header["checksums"]
    (path / "config.json").write_text(json.dumps(header))
    return path


def test_bad_folders_are_named_in_the_error(tmp_path):
    with pytest.raises(EmaeError, match=r"nowhere: model folder not found"):
        load_bundle(tmp_path / "nowhere")
    with pytest.raises(EmaeError, match=r"not an emae model folder \(no config.json\)"):
        load_bundle(tmp_path)
    path = save(tmp_path / "run")
    (path / "config.json").write_text("{not json")
    with pytest.raises(EmaeError, match=r"config.json: not readable as JSON"):
        load_bundle(path)
    (path / "config.json").write_text('{"model": "conv-ae"}')
    with pytest.raises(EmaeError, match=r"config.json: expected keys .* found \['model'\]"):
        load_bundle(path)
    path = save(tmp_path / "run", overwrite=True)
    edit_header(path, model="ica")
    with pytest.raises(EmaeError, match=r"config.json: unknown model 'ica'; known models"):
        load_bundle(path)
    path = save(tmp_path / "run", overwrite=True)
    (path / "normalization.json").write_text('{"low_value": 5, "high_value": 1}')
    with pytest.raises(EmaeError, match=r"normalization.json: high_value must be greater"):
        load_bundle(path)
    path = save(tmp_path / "run", overwrite=True)
    (path / "threshold.json").write_text('{"value": "high", "method": "fixed"}')
    with pytest.raises(EmaeError, match=r"threshold.json: threshold value must be a number"):
        load_bundle(path)


def test_weights_are_checked_tensor_by_tensor(tmp_path):
    path = without_checksums(save(tmp_path / "run"))  # else the checksum refuses them first
    state = safetensors.torch.load_file(path / "model.safetensors")
    name = "encoder.head.weight"
    safetensors.torch.save_file(
        {k: v for k, v in state.items() if k != name}, path / "model.safetensors"
    )
    with pytest.raises(EmaeError, match=rf"missing tensors \['{name}'\], unexpected tensors \[\]"):
        load_bundle(path)
    safetensors.torch.save_file({**state, name: state[name][:4]}, path / "model.safetensors")
    with pytest.raises(EmaeError, match=rf"tensor '{name}' has shape \(4, 16, 1, 1\), the model"):
        load_bundle(path)
    safetensors.torch.save_file({**state, "extra": torch.zeros(1)}, path / "model.safetensors")
    with pytest.raises(EmaeError, match=r"unexpected tensors \['extra'\]"):
        load_bundle(path)
    (path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes()[:100])
    with pytest.raises(EmaeError, match=r"model.safetensors: not a valid safetensors file"):
        load_bundle(path)
    (path / "model.safetensors").unlink()
    with pytest.raises(EmaeError, match=r"weights file model.safetensors is missing$"):
        load_bundle(path)


@pytest.mark.parametrize(
    ("version", "warns"),
    [("0.1.9", False), ("0.0.3", False), ("0.2.0", True), ("1.0.0", True), ("dev", True)],
)
def test_a_folder_from_a_newer_release_warns(tmp_path, version, warns):
    path = save(tmp_path / "run")
    edit_header(path, emae_version=version)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = load_bundle(path)
    assert bundle.emae_version == version
    messages = [str(w.message) for w in caught]
    assert bool(messages) == warns, messages
    if warns:
        assert str(path) in messages[0] and version in messages[0]


# --- no unpickling -------------------------------------------------------------------------------


class Trap:
    """Unpickling this creates ``marker``: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_loading_never_unpickles(tmp_path, monkeypatch):
    marker = tmp_path / "unpickled"
    payload = pickle.dumps({"state_dict": Trap(marker)})
    path = save(tmp_path / "run", arrays={"a": np.zeros(2)})

    def refuse(*args, **kwargs):
        raise AssertionError("load_bundle must not unpickle")

    for module, name in [(pickle, "load"), (pickle, "loads"), (torch, "load")]:
        monkeypatch.setattr(module, name, refuse)
    load_bundle(path)  # a valid folder loads without any of them

    for name in ("model.pt", "checkpoint.pt"):
        (path / name).write_bytes(payload)
    without_checksums(path)  # else the checksums refuse the replaced files before reading them
    (path / "model.safetensors").write_bytes(payload)
    with pytest.raises(EmaeError, match=r"not a valid safetensors file .* never unpickles"):
        load_bundle(path)
    (path / "model.safetensors").unlink()
    with pytest.raises(EmaeError, match=r"checkpoint.pt, model.pt not loaded \(emae never unp"):
        load_bundle(path)
    path = without_checksums(save(tmp_path / "run", overwrite=True, arrays={"a": np.zeros(2)}))
    (path / "scoring.safetensors").write_bytes(payload)
    with pytest.raises(EmaeError, match=r"scoring.safetensors: not a valid safetensors file"):
        load_bundle(path)
    assert not marker.exists()

    monkeypatch.undo()
    pickle.loads(payload)  # the trap is real: unpickling it does create the marker
    assert marker.exists()


def test_overwrite_never_replaces_a_folder_that_is_not_a_model(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "stack.tif").write_text("user data")
    with pytest.raises(EmaeError, match="not an emae model folder; refusing to replace it"):
        save(data, overwrite=True)
    assert [p.name for p in data.iterdir()] == ["stack.tif"]


def test_a_folder_of_another_kind_or_a_newer_format_is_refused(tmp_path):
    from emae.folders.classifier import load_classifier

    path = save(tmp_path / "ae")
    with pytest.raises(EmaeError, match="an autoencoder folder, not a classifier"):
        load_classifier(path)
    header = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**header, "kind": "classifier"}))
    with pytest.raises(EmaeError, match="a classifier folder, not an autoencoder one"):
        load_bundle(path)
    (path / "config.json").write_text(json.dumps({**header, "format": 2}))
    with pytest.raises(EmaeError, match="format 2, newer than this emae reads"):
        load_bundle(path)
    legacy = {k: v for k, v in header.items() if k not in ("kind", "format")}
    (path / "config.json").write_text(json.dumps(legacy))
    assert load_bundle(path).model_name == "conv-ae"  # written before kind and format
