"""The detector contract, checked the same way for every registered model and every score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import FAST_SCORE_PARAMS
from emae.anomaly.detector import AutoencoderDetector
from emae.anomaly.scores import SCORES
from emae.commands.pretrain import pretrain
from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError, NotFittedError
from emae.io import write_tiff
from emae.models import available_models, build_model
from emae.synth.tissue import make_section, make_volume, to_uint8
from emae.train.config import PretrainConfig

NORMALIZER = PercentileNormalizer(low_value=40.0, high_value=220.0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "stack.tif"
    write_tiff(path, to_uint8(make_volume((2, 96, 96), seed=0)), axes="ZYX")
    return path


@pytest.fixture(scope="module")
def tiny(tiny_settings) -> dict:
    """The shared tiny settings, trained for 4 steps."""
    return {**tiny_settings, "steps": 4}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """(8, 32, 32) uint8 patches of synthetic tissue, raw intensities."""
    section = to_uint8(make_section((128, 64), seed=3))
    return np.stack([section[y : y + 32, x : x + 32] for y in (0, 32, 64, 96) for x in (0, 32)])


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("conv-ae", channels=(8, 16), latent_channels=4, norm="batch").eval()


@pytest.mark.parametrize("model", available_models())
def test_every_model_meets_the_detector_contract(tmp_path, stack, images, tiny, model):
    run = tmp_path / "run"
    pretrain([stack], run, PretrainConfig(model=model, **tiny), progress=False)
    detector = AutoencoderDetector.from_bundle(run)
    maps = detector.anomaly_map(images)
    scores = detector.anomaly_score(images)
    assert maps.shape == images.shape and maps.dtype == np.float32
    assert scores.shape == (len(images),) and scores.dtype == np.float32
    assert np.isfinite(maps).all()
    np.testing.assert_array_equal(detector.predict(images), scores > detector.threshold_)
    # Any size the model accepts, not just the training patch size.
    assert detector.anomaly_map(images[:2, :24, :20]).shape == (2, 24, 20)

    # Loading twice gives identical scores; so does a second run with the same seed.
    np.testing.assert_array_equal(AutoencoderDetector.from_bundle(run).anomaly_map(images), maps)
    pretrain([stack], tmp_path / "again", PretrainConfig(model=model, **tiny), progress=False)
    again = AutoencoderDetector.from_bundle(tmp_path / "again")
    np.testing.assert_allclose(again.anomaly_map(images), maps, rtol=1e-5, atol=1e-5)
    assert again.threshold_ == pytest.approx(detector.threshold_, rel=1e-5, abs=1e-6)

    # A new detector around the same model must be fitted before it scores.
    fresh = AutoencoderDetector(detector.model, detector.normalizer, score=detector.score)
    with pytest.raises(NotFittedError, match="not fitted"):
        fresh.anomaly_map(images)


@pytest.mark.parametrize("score", SCORES)
def test_fit_save_load_gives_identical_scores(tmp_path, images, score):
    from emae.folders.autoencoder import save_bundle

    model = _model()
    detector = AutoencoderDetector(
        model, NORMALIZER, score=score, reduce="p99", score_params=FAST_SCORE_PARAMS.get(score)
    ).fit(images)
    assert detector.threshold_record_.method == "fpr"
    assert detector.threshold_record_.n_normal == 2  # 25% of 8 images held out
    assert detector.threshold_record_.score == f"{score}/p99"
    save_bundle(
        tmp_path / "m",
        model=model,
        model_name="conv-ae",
        model_kwargs={"channels": [8, 16], "latent_channels": 4, "norm": "batch"},
        normalizer=NORMALIZER,
        config={},
        **detector.bundle_parts(),
    )
    loaded = AutoencoderDetector.from_bundle(tmp_path / "m")
    np.testing.assert_array_equal(loaded.anomaly_map(images), detector.anomaly_map(images))
    assert loaded.threshold_record_ == detector.threshold_record_
    assert loaded.pixel_threshold_ == detector.pixel_threshold_


def test_threshold_flags_the_target_rate_of_held_out_normal_images():
    rng = np.random.default_rng(0)
    normal = (120 + 20 * rng.standard_normal((200, 16, 16))).astype(np.float32)
    detector = AutoencoderDetector(
        _model(), NORMALIZER, score="pixel", target_fpr=0.1, holdout=0.5
    ).fit(normal)
    # 100 held-out images at 10%: at most 10 of them are above the threshold.
    order = np.random.default_rng(0).permutation(200)
    held_out = normal[order[:100]]
    assert detector.predict(held_out).sum() <= 10
    assert detector.pixel_threshold_.n_normal == 100 * 16 * 16


def test_a_local_defect_scores_above_clean_tissue(images):
    detector = AutoencoderDetector(_model(), NORMALIZER, score="pixel").fit(images)
    damaged = images[:1].copy()
    damaged[0, 8:24, 8:24] = 255  # a saturated square: dust, a burnt spot
    maps = detector.anomaly_map(np.concatenate([images[:1], damaged]))
    assert maps[1, 8:24, 8:24].mean() > 2 * maps[0, 8:24, 8:24].mean()
    assert detector.anomaly_score(damaged)[0] > detector.anomaly_score(images[:1])[0]


def test_thresholds_from_labels_and_by_hand(images):
    detector = AutoencoderDetector(_model(), NORMALIZER, score="ssim").fit(images)
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    detector.threshold_from_labels(images, labels)
    assert detector.threshold_record_.method == "f1"
    assert detector.threshold_record_.n_anomalous == 4
    detector.set_threshold(0.5)
    assert detector.threshold_ == 0.5 and detector.threshold_record_.method == "fixed"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"score": "psnr"}, "unknown score 'psnr'"),
        ({"reduce": "median"}, "reduce must be one of"),
        ({"target_fpr": 1.5}, "target_fpr must be a rate"),
        ({"holdout": 0.0}, "holdout must be a fraction"),
        ({"precision": "fp16"}, "precision must be fp32, bf16 or auto"),
        ({"score": "pixel", "score_params": {"smooth_sigma": 1.0}}, "takes no score_params"),
        ({"score_params": {"window": 3.0}}, r"takes no parameters \['window'\]"),
    ],
)
def test_bad_parameters_are_named_at_fit(images, kwargs, message):
    with pytest.raises(EmaeError, match=message):
        AutoencoderDetector(_model(), NORMALIZER, **kwargs).fit(images)


def test_score_params_set_the_windows_and_survive_clone_and_the_folder(tmp_path, images):
    from sklearn.base import clone

    from emae.folders.autoencoder import save_bundle

    params = {"smooth_sigma": 2.0, "aggregate_sigma": 3.0}
    detector = AutoencoderDetector(_model(), NORMALIZER, score_params=params).fit(images)
    assert (detector.stats_.smooth_sigma, detector.stats_.aggregate_sigma) == (2.0, 3.0)
    assert clone(detector).score_params == params
    default = AutoencoderDetector(_model(), NORMALIZER).fit(images)
    assert default.stats_.aggregate_sigma == 16.0
    assert not np.array_equal(detector.anomaly_map(images[:2]), default.anomaly_map(images[:2]))
    save_bundle(
        tmp_path / "run",
        model=detector.model,
        model_name="conv-ae",
        model_kwargs={"channels": [8, 16], "latent_channels": 4, "norm": "batch"},
        normalizer=NORMALIZER,
        config={},
        **detector.bundle_parts(),
    )
    loaded = AutoencoderDetector.from_bundle(tmp_path / "run")
    assert loaded.stats_.aggregate_sigma == 3.0
    np.testing.assert_array_equal(loaded.anomaly_map(images[:2]), detector.anomaly_map(images[:2]))


def test_bad_input_is_refused(images):
    detector = AutoencoderDetector(_model(), NORMALIZER, score="pixel")
    with pytest.raises(EmaeError, match="held-out threshold"):
        detector.fit(images[:1])
    with pytest.raises(EmaeError, match=r"\(N, H, W\)"):
        detector.fit(images[0])
    bad = images.astype(np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(EmaeError, match="NaN"):
        detector.fit(bad)
    with pytest.raises(NotFittedError):
        detector.predict(images)


def test_a_model_folder_without_scoring_is_refused(tmp_path):
    from emae.folders.autoencoder import save_bundle

    save_bundle(
        tmp_path / "m",
        model=_model(),
        model_name="conv-ae",
        model_kwargs={"channels": [8, 16], "latent_channels": 4, "norm": "batch"},
        normalizer=NORMALIZER,
        config={},
    )
    with pytest.raises(EmaeError, match="no fitted anomaly score"):
        AutoencoderDetector.from_bundle(tmp_path / "m")


def test_reduced_precision_maps_stay_close_to_fp32(images):
    """bf16 autocast + channels-last where the CPU has bf16 (fp32 elsewhere): same ranking."""
    detector = AutoencoderDetector(_model(), NORMALIZER).fit(images)
    exact = detector.anomaly_map(images)
    detector.precision = "auto"
    fast = detector.anomaly_map(images)
    detector.precision = "fp32"
    np.testing.assert_array_equal(detector.anomaly_map(images), exact)  # nothing left behind
    assert fast.shape == exact.shape and fast.dtype == np.float32
    scale = np.percentile(np.abs(exact), 99)
    assert np.percentile(np.abs(fast - exact), 99) < 0.1 * scale
    assert np.corrcoef(fast.ravel(), exact.ravel())[0, 1] > 0.98
