"""Oriented line responses: exact on the axes, and larger for long straight lines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from emae.anomaly.line_filter import line_responses
from emae.errors import EmaeError


def _axis_response(image: np.ndarray, length: int, offset: int) -> np.ndarray:
    """R at angle 0 with scipy: mean along x minus the mean of the rows ``offset`` above and
    below (half-sample reflection at the borders)."""
    lines = ndi.uniform_filter1d(image.astype(np.float64), length, axis=1, mode="reflect")
    padded = np.pad(lines, ((offset, offset), (0, 0)), mode="symmetric")
    return lines - 0.5 * (padded[: -2 * offset] + padded[2 * offset :])


def test_axis_orientations_match_scipy() -> None:
    rng = np.random.default_rng(0)
    # Sides of one parity: the canvas's pixels then fall on the image's at 0 and 90 degrees.
    image = rng.standard_normal((37, 51)).astype(np.float32)
    got = line_responses(torch.from_numpy(image)[None, None], length=9, angles=2, offset=3)
    horizontal = _axis_response(image, 9, 3)
    vertical = _axis_response(image.T, 9, 3).T
    want = np.maximum(horizontal, vertical), np.maximum(-horizontal, -vertical)
    assert got.shape == (1, 2, 37, 51)
    np.testing.assert_allclose(got[0, 0].numpy(), want[0], atol=1e-4)
    np.testing.assert_allclose(got[0, 1].numpy(), want[1], atol=1e-4)


def _line_image(angle: float, half_length: float, sign: float = 1.0) -> np.ndarray:
    """A 1-pixel-sigma line of contrast 1 through the centre of a flat 96 x 96 image."""
    ys, xs = np.mgrid[:96, :96].astype(np.float64) - 47.5
    along = xs * np.cos(angle) + ys * np.sin(angle)
    across = -xs * np.sin(angle) + ys * np.cos(angle)
    line = np.exp(-0.5 * across**2) * (np.abs(along) <= half_length)
    return (sign * line).astype(np.float32)


@pytest.mark.parametrize("angle", [0.0, 0.5, 1.2])
def test_long_line_responds_in_any_direction_and_short_one_less(angle: float) -> None:
    def centre(image: np.ndarray) -> np.ndarray:
        out = line_responses(torch.from_numpy(image)[None, None], length=31, angles=32)
        return out[0, :, 46:50, 46:50].amax(dim=(1, 2)).numpy()

    long_bright, long_dark = centre(_line_image(angle, 60))
    assert long_bright > 0.75 and long_dark < 0.1
    short_bright, _ = centre(_line_image(angle, 5))
    assert short_bright < 0.5 * long_bright
    # A dark line is found by the dark channel.
    bright, dark = centre(_line_image(angle, 60, sign=-1.0))
    assert dark > 0.75 and bright < 0.1


def test_flat_image_and_far_pixels_give_zero() -> None:
    flat = torch.full((2, 1, 40, 40), 0.3)
    np.testing.assert_allclose(line_responses(flat, 11, 8).numpy(), 0.0, atol=1e-5)
    out = line_responses(torch.from_numpy(_line_image(0.0, 60))[None, None], 11, 8)
    assert float(out[0, :, :20].abs().max()) < 1e-3  # rows far above the line


def test_bad_input_is_refused() -> None:
    with pytest.raises(EmaeError, match=r"\(N, 1, H, W\)"):
        line_responses(torch.zeros(1, 2, 8, 8))
    with pytest.raises(EmaeError, match="length >= 3"):
        line_responses(torch.zeros(1, 1, 8, 8), length=2)
