"""Pretraining from files: the model folder, exact resume, configuration errors, every model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from emae.cli import main
from emae.commands.pretrain import load_config, pretrain
from emae.data.dataset import RandomPatchDataset
from emae.errors import EmaeError
from emae.io import write_tiff
from emae.models import available_models, model_spec
from emae.synth.tissue import make_volume, to_uint8
from emae.train.config import PretrainConfig


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "stack.tif"
    write_tiff(path, to_uint8(make_volume((2, 96, 96), seed=0)), axes="ZYX")
    return path


@pytest.fixture(scope="module")
def tiny(tiny_settings) -> dict:
    """The shared tiny settings for 4 steps, with the default ``score_patches``."""
    return {k: v for k, v in tiny_settings.items() if k != "score_patches"} | {"steps": 4}


@pytest.mark.parametrize("model", available_models())
def test_every_model_pretrains_into_a_model_folder(tmp_path, stack, tiny, model):
    run = tmp_path / "run"
    summary = pretrain([stack], run, PretrainConfig(model=model, **tiny), progress=False)
    steps = 0 if model_spec(model).fitted_in_closed_form else 4  # PCA: fitted, not trained
    assert summary["steps_done"] == steps and summary["best_val"] > 0
    assert summary["threshold"]["method"] == "fpr" and summary["threshold"]["n_normal"] > 0
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "model.safetensors", "normalization.json", "training.json"} <= names
    assert not (tmp_path / "run.training").exists()


@pytest.mark.parametrize(
    "model", [m for m in available_models() if not model_spec(m).fitted_in_closed_form]
)
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, stack, tiny, monkeypatch, model):
    config = PretrainConfig(**{**tiny, "steps": 6, "model": model})
    pretrain([stack], tmp_path / "a", config, progress=False)

    original = RandomPatchDataset.__getitem__

    def crash(self, index):
        if len(self) > config.val_patches and index >= 3 * config.batch_size:
            raise KeyboardInterrupt
        return original(self, index)

    monkeypatch.setattr(RandomPatchDataset, "__getitem__", crash)
    with pytest.raises(KeyboardInterrupt):
        pretrain([stack], tmp_path / "b", config, progress=False)
    monkeypatch.setattr(RandomPatchDataset, "__getitem__", original)
    assert not (tmp_path / "b").exists() and (tmp_path / "b.training" / "checkpoint.pt").exists()

    with pytest.raises(EmaeError, match="interrupted run; pass --resume"):
        pretrain([stack], tmp_path / "b", config, progress=False)
    with pytest.raises(EmaeError, match="options: \\['seed'\\]"):
        pretrain([stack], tmp_path / "b", config.model_copy(update={"seed": 5}), resume=True)
    pretrain([stack], tmp_path / "b", config, resume=True, progress=False)
    a, b = load_file(tmp_path / "a/model.safetensors"), load_file(tmp_path / "b/model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_existing_model_folder_is_kept(tmp_path, stack, tiny):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(EmaeError, match="already exists"):
        pretrain([stack], run, PretrainConfig(**tiny), progress=False)
    assert (run / "notes.txt").read_text() == "mine"


def test_config_file_and_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: vae\nsteps: 10\n")
    config = load_config(path, steps=20, seed=None)
    assert (config.model, config.steps, config.seed) == ("vae", 20, 0)
    path.write_text("model: vae\nstepz: 10\n")
    with pytest.raises(EmaeError, match="stepz: Extra inputs are not permitted"):
        load_config(path)
    with pytest.raises(EmaeError, match="unknown model 'unet'"):
        load_config(None, model="unet")
    with pytest.raises(EmaeError, match="patch_size must be a multiple of 8"):
        load_config(None, patch_size=60)


def test_cli_pretrain(tmp_path, stack, tiny, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(
        "\n".join(
            f"{k}: {list(v) if isinstance(v, tuple) else v}"
            for k, v in tiny.items()
            if k != "steps"
        )
    )
    code = main(
        [
            "-q",
            "pretrain",
            str(stack),
            "--out",
            str(tmp_path / "run"),
            "--config",
            str(config),
            "--steps",
            "2",
        ]
    )
    assert code == 0
    assert "conv-ae: trained for 2 steps" in capsys.readouterr().out
    assert main(["pretrain", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "r2")]) == 1
    assert "missing.tif: no such file" in capsys.readouterr().err


def test_tensorboard_logs_land_in_the_model_folder(tmp_path, stack, tiny):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    pretrain([stack], run, PretrainConfig(**tiny, tensorboard=True), progress=False)
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0


def test_torchrun_pretrains_one_model_folder_from_two_processes(tmp_path, stack, tiny):
    import json
    import os
    import subprocess
    import sys

    import yaml

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**tiny, "channels": [8, 16], "norm": "none"}))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "emae",
        "-q",
        "pretrain",
        str(stack),
        "--out",
        str(tmp_path / "run"),
        "--config",
        str(config),
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    # What went wrong in a worker comes first; torchrun's own summary comes last.
    said = [line for line in done.stderr.splitlines() if "Warning" not in line]
    assert done.returncode == 0, "\n".join([*said[:40], "...", *said[-15:]])
    summary = json.loads((tmp_path / "run" / "training.json").read_text())
    assert summary["processes"] == 2 and summary["steps_done"] == tiny["steps"]
    assert not (tmp_path / "run.training").exists()
    # The same global batch in one process gives the same weights (no BatchNorm here).
    pretrain(
        [stack], tmp_path / "single", PretrainConfig(**{**tiny, "norm": "none"}), progress=False
    )
    two = load_file(tmp_path / "run" / "model.safetensors")
    one = load_file(tmp_path / "single" / "model.safetensors")
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-5, msg=key)


def test_images_on_a_black_background_train_with_the_padding_check_off(tmp_path, tiny):
    rng = np.random.default_rng(0)
    digits = np.zeros((20, 32, 32), dtype=np.uint8)
    digits[:, 10:22, 12:20] = rng.integers(100, 255, (20, 12, 8))  # small bright objects
    write_tiff(tmp_path / "digits.tif", digits, axes="ZYX")
    config = PretrainConfig(**{**tiny, "steps": 2}, skip_padding=False, threads=1)
    summary = pretrain([tmp_path / "digits.tif"], tmp_path / "run", config, progress=False)
    assert summary["steps_done"] == 2
    with pytest.raises(EmaeError, match="skip_padding: false"):
        pretrain([tmp_path / "digits.tif"], tmp_path / "b", PretrainConfig(**tiny), progress=False)


def test_the_discriminative_score_trains_saves_and_maps(tmp_path, stack, tiny):
    from emae.anomaly.detector import AutoencoderDetector
    from emae.io import open_image
    from emae.synth.artifacts import ARTIFACT_TYPES

    run = tmp_path / "run"
    config = PretrainConfig(score="discriminative", score_steps=3, score_patches=16, **tiny)
    pretrain([stack], run, config, progress=False)
    detector = AutoencoderDetector.from_bundle(run)
    assert detector.score == "discriminative"
    assert detector.stats_.kinds == ARTIFACT_TYPES  # every kind, from the folder's arrays
    section = np.asarray(open_image(str(stack))[0])
    maps = detector.anomaly_map(section[None])
    assert maps.shape == (1, 96, 96) and np.isfinite(maps).all()
    code = main(["-q", "score", str(run), str(stack), "--out", str(tmp_path / "map.tif")])
    assert code == 0
    argv = ["-q", "pretrain", str(stack), "--out", str(tmp_path / "cli"), "--steps", "2"]
    argv += ["--score", "discriminative", "--score-steps", "2", "--patch-size", "32"]
    assert main(argv) == 0
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["run"]["score_steps"] == 2
