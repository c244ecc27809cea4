"""The discriminative score: a segmenter of drawn artifacts on (image, reconstruction)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from emae.anomaly.discriminative import DiscriminativeHead
from emae.errors import EmaeError, NotFittedError
from emae.synth.artifacts import MASK_LEVEL, inject
from emae.synth.tissue import make_section
from emae.train.drawn_artifacts import draw_artifacts, focal_loss, random_crops


class Blur(nn.Module):
    """A stand-in autoencoder: reconstructs smooth content, loses texture and noise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = torch.ones(1, 1, 5, 5, dtype=x.dtype) / 25
        return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (2,) * 4, "reflect"), k)


def _tissue(n: int, size: int, seed: int) -> np.ndarray:
    return np.stack([make_section((size, size), seed=seed + i) for i in range(n)]).astype(
        np.float32
    )


def test_draw_artifacts_marks_what_it_changed_and_leaves_the_rest():
    crops = _tissue(12, 48, seed=0)
    crops[:, 0, 0] = 1.3  # out of [0, 1]: kept where nothing is drawn
    before = crops.copy()
    rng = np.random.default_rng(0)
    corrupted, masks = draw_artifacts(crops, ["dust", "scratch"], rng, share=1.0, reference_side=96)
    np.testing.assert_array_equal(crops, before)
    assert corrupted.dtype == np.float32 and masks.dtype == bool
    assert all(m.any() for m in masks)
    assert np.abs(corrupted - crops)[~masks].max() <= MASK_LEVEL + 1e-6
    untouched = ~masks[:, 0, 0]
    np.testing.assert_allclose(corrupted[untouched, 0, 0], 1.3, atol=MASK_LEVEL + 1e-6)
    _, none = draw_artifacts(crops, ["dust"], np.random.default_rng(1), share=1e-9)
    assert not none.any()


def test_random_crops_and_focal_loss():
    images = _tissue(3, 40, seed=5)
    crops = random_crops(images, 7, 16, np.random.default_rng(0))
    assert crops.shape == (7, 16, 16) and crops.dtype == np.float32
    logits = torch.tensor([[4.0, -4.0], [0.0, 0.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert 0 < focal_loss(logits, target) < bce  # confident pixels weigh less


def test_the_head_learns_to_find_a_drawn_kind():
    torch.manual_seed(0)
    model = Blur()
    normal = _tissue(24, 64, seed=100)
    head = DiscriminativeHead(
        kinds=("tile",), steps=150, batch_size=8, reference_side=128, combine=False
    ).fit(model, normal)
    auroc = []
    for seed in range(3):
        clean = np.clip(make_section((128, 128), seed=7 + seed), 0, 1)
        image, mask = inject(clean, "tile", seed=seed)
        anomaly = head.anomaly_map(model, image[None])[0]
        assert anomaly.shape == (128, 128) and anomaly.dtype == np.float32
        auroc.append(roc_auc_score(mask.ravel(), anomaly.ravel()))
    assert np.mean(auroc) > 0.9, auroc
    assert np.mean(head.losses_[-20:]) < 0.5 * np.mean(head.losses_[:20])
    # Combined with typicality, the map is the sum of the two standardized maps.
    alone = head.anomaly_map(model, image[None])
    head.combine = True
    typical = head.typicality_.anomaly_map(model, image[None])
    mean_t, std_t = head.scale_[2:]
    np.testing.assert_allclose(
        head.anomaly_map(model, image[None]), alone + (typical - mean_t) / std_t, atol=1e-4
    )


def test_round_trip_contract_and_bad_parameters():
    model = Blur()
    normal = _tissue(6, 32, seed=10)
    stats = DiscriminativeHead(kinds=("ring", "seam"), steps=3, batch_size=4).fit(model, normal)
    arrays = stats.to_arrays()
    again = DiscriminativeHead.from_arrays(arrays)
    assert again.kinds == ("ring", "seam") and again.channels == (16, 32, 64, 128)
    x = _tissue(2, 40, seed=30)[:, :, :37]
    np.testing.assert_array_equal(stats.anomaly_map(model, x), again.anomaly_map(model, x))
    with pytest.raises(NotFittedError):
        DiscriminativeHead().anomaly_map(model, x)
    broken = {k: v for k, v in arrays.items() if not k.endswith("head.head.bias")}
    with pytest.raises(EmaeError, match="do not fit the head"):
        DiscriminativeHead.from_arrays(broken)
    for bad, match in (
        ({"kinds": ("smudge",)}, "kinds"),
        ({"kinds": ()}, "kinds"),
        ({"kinds": ("dust", "dust")}, "kinds"),
        ({"steps": 0}, "steps"),
        ({"crop": 64}, "smaller than the crop"),
        ({"share": 0.0}, "share"),
    ):
        with pytest.raises(EmaeError, match=match):
            DiscriminativeHead(**bad).fit(model, normal)
