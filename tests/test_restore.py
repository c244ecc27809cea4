"""Restoration: blind-spot training, the U-Net, and ``emae denoise`` on volumes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr
from scipy import ndimage

from emae.cli import main
from emae.commands.denoise import denoise
from emae.commands.inpaint import inpaint
from emae.commands.repair import repair
from emae.commands.restore import restore_volume
from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError
from emae.folders.autoencoder import save_bundle
from emae.io import open_image
from emae.models import UNet, build_model
from emae.restore import Restorer, cast_to
from emae.restore.noise import NoiseModel, fit_noise_model, posterior_mean
from emae.synth.tissue import make_volume, to_uint8
from emae.train.autoencoder import fit_autoencoder
from emae.train.blind_spot import blind_spot_inputs, blind_spot_loss, blind_spot_mask
from emae.train.config import PretrainConfig
from emae.train.holes import hole_masks, inpainting_loss
from emae.volume.done import DONE

UNET = {"channels": [8, 16, 16], "latent_channels": 8}
RUN = {"scheduler": "synchronous", "chunk": 32, "overlap": 48, "progress": False}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A (2, 90, 75) uint8 stack with a pixel size, and an untrained blind-spot model folder
    (random weights, seed 0, its last layer scaled up to overshoot the uint8 range)."""
    root = tmp_path_factory.mktemp("restore")
    stack = to_uint8(make_volume((2, 90, 75), seed=3))
    tifffile.imwrite(
        root / "stack.tif",
        stack,
        imagej=True,
        resolution=(1 / 0.004, 1 / 0.004),
        metadata={"axes": "ZYX", "spacing": 0.03, "unit": "um"},
    )
    torch.manual_seed(0)
    model = build_model("blind-spot", **UNET).eval()
    with torch.no_grad():
        model.head.weight.mul_(40)  # outputs from about 0.3 to 2.6: the bright half clips
    for name, kind in (("model", "blind-spot"), ("plain", "conv-ae")):
        save_bundle(
            root / name,
            model=model if kind == "blind-spot" else build_model(kind, channels=(8, 16)),
            model_name=kind,
            model_kwargs=UNET if kind == "blind-spot" else {"channels": [8, 16]},
            normalizer=PercentileNormalizer(20.0, 230.0, source_dtype="uint8"),
            config={},
        )
    return root


def test_one_pixel_is_masked_per_cell():
    mask = blind_spot_mask((3, 1, 20, 19), torch.Generator().manual_seed(0), cell=8)
    assert mask.dtype == torch.bool and mask.shape == (3, 1, 20, 19)
    for n in range(3):
        for y in range(0, 20, 8):
            for x in range(0, 19, 8):
                assert mask[n, 0, y : y + 8, x : x + 8].sum() == 1


def test_masked_pixels_take_another_pixel_of_their_window_and_only_they_change():
    h, w, radius = 16, 12, 2
    x = torch.arange(2 * h * w, dtype=torch.float32).reshape(2, 1, h, w)  # every value unique
    g = torch.Generator().manual_seed(1)
    mask = blind_spot_mask(tuple(x.shape), g, cell=4)
    out = blind_spot_inputs(x, mask, g, radius=radius)
    assert torch.equal(out[~mask.expand_as(x)], x[~mask.expand_as(x)])
    for n, _, y, xx in mask.nonzero().tolist():
        source = int(out[n, 0, y, xx]) - n * h * w
        sy, sx = divmod(source, w)
        assert (sy, sx) != (y, xx)
        # within the window, or its reflection at the border
        assert abs(sy - y) <= radius or y < radius or y >= h - radius
        assert abs(sx - xx) <= radius or xx < radius or xx >= w - radius
        assert abs(sy - y) <= 2 * radius and abs(sx - xx) <= 2 * radius


def test_the_loss_reaches_the_masked_pixels_only():
    """The gradient of the loss with respect to the output is zero off the masked pixels."""
    out = torch.zeros(2, 1, 24, 24, requires_grad=True)

    class Output(torch.nn.Module):
        def forward(self, x):
            return out

    x = torch.rand(2, 1, 24, 24)
    blind_spot_loss(Output(), x, torch.Generator().manual_seed(2), cell=8).backward()
    mask = blind_spot_mask((2, 1, 24, 24), torch.Generator().manual_seed(2), cell=8)
    assert torch.all(out.grad[~mask] == 0)
    assert torch.all(out.grad[mask] != 0)
    assert int(mask.sum()) == 2 * 9


def test_the_unet_takes_any_size_keeps_it_and_trains_every_parameter():
    torch.manual_seed(0)
    model = UNet(channels=(8, 16), latent_channels=4)
    for shape in [(2, 1, 32, 32), (1, 1, 37, 50)]:
        assert model(torch.rand(shape)).shape == shape
    assert model.features(torch.rand(1, 1, 37, 50)).shape == (1, 4, 10, 13)
    x = torch.rand(4, 1, 32, 32)
    blind_spot_loss(model, x, torch.Generator().manual_seed(0), cell=4).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():  # batch norm in eval mode: each sample alone gives the same
        torch.testing.assert_close(model(x)[:1], model(x[:1]))
    with pytest.raises(EmaeError, match=r"expected a tensor of shape \(N, 1, H, W\)"):
        model(torch.rand(1, 2, 32, 32))


def test_a_blind_spot_model_trains_and_validates_on_its_own_loss(tmp_path, tiny_settings):
    stack = to_uint8(make_volume((2, 64, 64), seed=5))
    tifffile.imwrite(tmp_path / "noisy.tif", stack)
    settings = {**tiny_settings, "model": "blind-spot", "steps": 3, "val_every": 1}
    config = PretrainConfig(**settings)
    assert "latent" not in config.model_kwargs()
    normalizer = PercentileNormalizer(0.0, 255.0, source_dtype="uint8")
    model, summary = fit_autoencoder([str(tmp_path / "noisy.tif")], normalizer, config)
    assert isinstance(model, UNet) and summary["steps_done"] == 3
    assert all(np.isfinite(h["val_loss"]) for h in summary["history"] if "val_loss" in h)
    with pytest.raises(ValueError, match="mse or l1"):
        PretrainConfig(**{**settings, "loss": "ssim"})


def test_chunks_are_restored_without_seams(data, tmp_path):
    """Chunks of 32 with a 48-pixel halo give exactly one pass over each whole section, the
    noise model fitted on the input included."""
    out = tmp_path / "den.zarr"
    summary = denoise(data / "model", data / "stack.tif", out, dtype="float32", **RUN)
    assert summary["chunks"] == {"done": 2 * 3 * 3, "skipped": 0}
    restored = zarr.open_array(str(out / "0"), mode="r")[:]
    restorer = Restorer.from_folder(data / "model", "denoise", noise=NoiseModel(**summary["noise"]))
    stack = tifffile.imread(data / "stack.tif")
    whole = np.stack([restorer(s[None])[0, 0] for s in stack])
    np.testing.assert_allclose(restored, whole, atol=1e-4)


def test_denoise_writes_a_tiff_in_the_input_dtype_and_counts_the_clipped_pixels(data, tmp_path):
    before = _sha(data / "stack.tif")
    off = {**RUN, "noise": "off"}  # the prediction alone: the untrained model overshoots
    floats = denoise(
        data / "model", data / "stack.tif", tmp_path / "f.zarr", dtype="float32", **off
    )
    out = tmp_path / "den.tif"
    summary = denoise(data / "model", data / "stack.tif", out, **off)
    assert _sha(data / "stack.tif") == before
    assert not (tmp_path / "den.tif.partial.zarr").exists()  # the work store is gone
    written = tifffile.imread(out)
    values = zarr.open_array(str(tmp_path / "f.zarr" / "0"), mode="r")[:]
    expected, clipped = cast_to(values, np.uint8)
    assert written.dtype == np.uint8 and written.shape == (2, 90, 75)
    np.testing.assert_array_equal(written, expected)
    assert summary["clipped_pixels"] == clipped > 0  # the untrained model overshoots
    assert floats["clipped_pixels"] == 0
    assert open_image(out).pixel_size == pytest.approx((30.0, 4.0, 4.0))
    rows = (tmp_path / "den.tif.sections.csv").read_text().splitlines()
    assert rows[0] == "z,pixels,replaced_pixels,replaced_fraction,clipped_pixels"
    assert sum(int(r.split(",")[-1]) for r in rows[1:]) == clipped


def test_the_denoised_store_opens_in_ome_zarr_readers(data, tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models.v04.image import Image as NGFFImage

    out = tmp_path / "den.zarr"
    denoise(data / "model", data / "stack.tif", out, **RUN)
    nodes = list(Reader(parse_url(str(out)))())
    assert nodes[0].data[0].shape == (2, 90, 75) and nodes[0].data[0].dtype == np.uint8
    assert nodes[0].metadata["coordinateTransformations"][0][0]["scale"] == pytest.approx(
        [30.0, 4.0, 4.0]
    )
    NGFFImage.from_zarr(zarr.open_group(str(out), mode="r"))
    level1 = zarr.open_array(str(out / "1"), mode="r")[:]  # the pyramid was built
    assert level1.shape == (2, 45, 38) and level1.any()


def test_an_interrupted_denoise_resumes_to_the_same_result(data, tmp_path, monkeypatch):
    first = tmp_path / "a.zarr"
    denoise(data / "model", data / "stack.tif", first, **RUN)
    import emae.volume.restore as module

    original = module.write_chunk_record

    def fail_in_section_one(out, name, qc, pieces):
        if qc["z"] == 1:
            raise RuntimeError("node lost")
        return original(out, name, qc, pieces)

    monkeypatch.setattr(module, "write_chunk_record", fail_in_section_one)
    second = tmp_path / "b.zarr"
    with pytest.raises(EmaeError, match="9 of 18 chunks failed"):
        denoise(data / "model", data / "stack.tif", second, retries=0, **RUN)
    assert sorted(p.name for p in (second / DONE).iterdir()) == ["z0.npz"]
    monkeypatch.setattr(module, "write_chunk_record", original)
    summary = denoise(data / "model", data / "stack.tif", second, **RUN)
    assert summary["chunks"] == {"done": 9, "skipped": 9}
    np.testing.assert_array_equal(
        zarr.open_array(str(first / "0"))[:], zarr.open_array(str(second / "0"))[:]
    )


def test_denoise_refuses_bad_models_and_options(data, tmp_path):
    with pytest.raises(EmaeError, match=r"'conv-ae' is not a restoration model.*blind-spot"):
        denoise(data / "plain", data / "stack.tif", tmp_path / "x.zarr", **RUN)
    with pytest.raises(EmaeError, match="was trained to denoise, so it cannot inpaint"):
        Restorer.from_folder(data / "model", "inpaint")
    with pytest.raises(EmaeError, match="multiples of 8"):
        denoise(data / "model", data / "stack.tif", tmp_path / "x.zarr", **{**RUN, "chunk": 30})
    with pytest.raises(EmaeError, match=r"must be a \.zarr store or a \.tif"):
        denoise(data / "model", data / "stack.tif", tmp_path / "x.png", **RUN)
    foreign = tmp_path / "mine.tif"
    tifffile.imwrite(foreign, np.zeros((4, 4), np.uint8))
    with pytest.raises(EmaeError, match="already exists"):
        denoise(data / "model", data / "stack.tif", foreign, **RUN)
    with pytest.raises(EmaeError, match="is not an emae denoised image"):
        denoise(data / "model", data / "stack.tif", foreign, overwrite=True, **RUN)
    assert tifffile.imread(foreign).shape == (4, 4)


def test_the_denoise_command(data, tmp_path, capsys):
    out = tmp_path / "den.zarr"
    args = ["denoise", str(data / "model"), str(data / "stack.tif"), "--out", str(out)]
    assert main([*args, "--scheduler", "synchronous", "--chunk", "64", "-q"]) == 0
    assert "8 chunks done" in capsys.readouterr().out
    assert main([*args, "--scheduler", "synchronous", "--chunk", "60", "-q"]) == 1
    assert "multiples of 8" in capsys.readouterr().err


# Inpainting and repair -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def holes_data(data) -> Path:
    """An untrained inpainting model folder and a hole mask (a 20 x 30 block crossing chunk
    borders in section 1, a line in section 0) beside ``data``'s stack."""
    torch.manual_seed(1)
    save_bundle(
        data / "inpainter",
        model=build_model("inpainting-ae", **UNET).eval(),
        model_name="inpainting-ae",
        model_kwargs=UNET,
        normalizer=PercentileNormalizer(20.0, 230.0, source_dtype="uint8"),
        config={},
    )
    mask = np.zeros((2, 90, 75), np.uint8)
    mask[1, 25:45, 20:50] = 1
    mask[0, 60, 5:70] = 255
    tifffile.imwrite(data / "mask.tif", mask)
    return data


def test_holes_are_blobs_lines_and_bands_and_leave_something_to_fill_from():
    holes = hole_masks((16, 1, 64, 64), torch.Generator().manual_seed(0))
    assert holes.dtype == torch.bool and holes.shape == (16, 1, 64, 64)
    area = holes.float().mean(dim=(1, 2, 3))
    assert bool((area > 0).all()) and bool((area < 1).all())
    again = hole_masks((16, 1, 64, 64), torch.Generator().manual_seed(0))
    assert torch.equal(holes, again)


def test_the_inpainting_loss_reaches_the_holes_and_their_ring_only():
    out = torch.zeros(2, 1, 32, 32, requires_grad=True)

    class Output(torch.nn.Module):
        def forward(self, x):
            assert x.shape == (2, 2, 32, 32)  # image with holes at 0, and the mask
            assert torch.all(x[:, 0][x[:, 1] > 0] == 0)
            return out

    x = torch.rand(2, 1, 32, 32) + 0.5
    inpainting_loss(Output(), x, torch.Generator().manual_seed(3)).backward()
    holes = hole_masks((2, 1, 32, 32), torch.Generator().manual_seed(3))
    grown = torch.nn.functional.max_pool2d(holes.float(), 7, stride=1, padding=3) > 0
    assert torch.all(out.grad[~grown] == 0) and torch.all(out.grad[grown] != 0)


def test_an_inpainting_model_trains(tmp_path, tiny_settings):
    tifffile.imwrite(tmp_path / "clean.tif", to_uint8(make_volume((2, 64, 64), seed=6)))
    config = PretrainConfig(**{**tiny_settings, "model": "inpainting-ae", "steps": 2})
    normalizer = PercentileNormalizer(0.0, 255.0, source_dtype="uint8")
    model, summary = fit_autoencoder([str(tmp_path / "clean.tif")], normalizer, config)
    assert summary["steps_done"] == 2 and np.isfinite(summary["best_val"])
    assert model(torch.rand(1, 1, 32, 32)).shape == (1, 1, 32, 32)  # no holes: one channel


def test_inpaint_fills_the_holes_and_keeps_every_other_pixel(holes_data, tmp_path):
    stack = tifffile.imread(holes_data / "stack.tif")
    mask = tifffile.imread(holes_data / "mask.tif") > 0
    out = tmp_path / "filled.zarr"
    summary = inpaint(
        holes_data / "inpainter",
        holes_data / "stack.tif",
        out,
        mask=holes_data / "mask.tif",
        dtype="float32",
        **RUN,
    )
    assert summary["replaced_pixels"] == int(mask.sum())
    filled = zarr.open_array(str(out / "0"), mode="r")[:]
    near = np.stack([ndimage.distance_transform_edt(~m) < 4 for m in mask])  # feather 3
    np.testing.assert_array_equal(filled[~near], stack[~near].astype(np.float32))
    assert np.abs(filled[mask] - stack[mask]).mean() > 1  # the holes were filled anew
    restorer = Restorer.from_folder(holes_data / "inpainter", "inpaint")
    holed = np.where(mask, np.nan, stack.astype(np.float32))
    whole = np.stack([restorer(s[None])[0, 0] for s in holed])  # one pass per section
    np.testing.assert_allclose(filled, whole, atol=1e-3)


def test_inpaint_bad_masks(holes_data, tmp_path, caplog):
    args = (holes_data / "inpainter", holes_data / "stack.tif")
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros((2, 90, 75), np.uint8))
    summary = inpaint(*args, tmp_path / "same.tif", mask=tmp_path / "empty.tif", **RUN)
    assert summary["replaced_pixels"] == 0 and "marks no pixel" in caplog.text
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "same.tif"), tifffile.imread(holes_data / "stack.tif")
    )
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((2, 90, 70), np.uint8))
    with pytest.raises(EmaeError, match=r"mask has shape \(2, 90, 70\).*\(2, 90, 75\)"):
        inpaint(*args, tmp_path / "x.zarr", mask=tmp_path / "small.tif", **RUN)
    tifffile.imwrite(tmp_path / "full.tif", np.ones((2, 90, 75), np.uint8))
    summary = inpaint(*args, tmp_path / "full.zarr", mask=tmp_path / "full.tif", **RUN)
    assert summary["replaced_pixels"] == summary["pixels"] and "covers every pixel" in caplog.text
    with pytest.raises(EmaeError, match="was trained to denoise, so it cannot inpaint"):
        inpaint(
            holes_data / "model",
            holes_data / "stack.tif",
            tmp_path / "y.zarr",
            mask=holes_data / "mask.tif",
            **RUN,
        )


def test_repair_detects_fills_and_writes_its_folder(holes_data, tiny_model, tmp_path, capsys):
    stack = tifffile.imread(holes_data / "stack.tif")
    out = tmp_path / "repair"
    args = [
        "repair",
        str(tiny_model),
        str(holes_data / "inpainter"),
        str(holes_data / "stack.tif"),
        "--out",
        str(out),
        "--scheduler",
        "synchronous",
        "--chunk",
        "32",
        "--overlap",
        "48",
        "--margin",
        "2",
        "-q",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "pixels" in printed and "replaced" in printed
    assert {p.name for p in out.iterdir()} >= {
        "detect.zarr",
        "repaired.zarr",
        "mask.zarr",
        "panels.png",
        "repair.json",
        "repaired.zarr.sections.csv",
    }
    record = json.loads((out / "repair.json").read_text())
    anomaly = zarr.open_array(str(out / "detect.zarr" / "0"), mode="r")[:]
    holes = anomaly > record["threshold"]
    grown = np.stack([ndimage.distance_transform_edt(~h) <= 2 for h in holes])
    replaced = zarr.open_array(str(out / "mask.zarr" / "0"), mode="r")[:]
    np.testing.assert_array_equal(replaced.astype(bool), grown)
    repaired = zarr.open_array(str(out / "repaired.zarr" / "0"), mode="r")[:]
    far = ~np.stack([ndimage.distance_transform_edt(~g) < 4 for g in grown])
    np.testing.assert_array_equal(repaired[far], stack[far])
    assert record["inpaint"]["replaced_pixels"] == int(grown.sum())
    again = repair(  # the same run through the API: everything is done already
        tiny_model,
        holes_data / "inpainter",
        holes_data / "stack.tif",
        out,
        margin=2,
        scheduler="synchronous",
        chunk=32,
        overlap=48,
        progress=False,
    )
    assert again["detect"]["chunks"]["done"] == 0 and again["inpaint"]["chunks"]["done"] == 0
    np.testing.assert_array_equal(zarr.open_array(str(out / "repaired.zarr" / "0"))[:], repaired)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main([*args[:4], "--out", str(tmp_path / "mine"), *args[6:]]) == 1
    assert "did not make" in capsys.readouterr().err


def test_a_rewritten_mask_is_not_taken_for_the_one_a_run_used(holes_data, tmp_path):
    mask = tmp_path / "mask.tif"
    tifffile.imwrite(mask, tifffile.imread(holes_data / "mask.tif"))
    args = (holes_data / "inpainter", holes_data / "stack.tif", tmp_path / "f.zarr")
    inpaint(*args, mask=mask, **RUN)
    assert inpaint(*args, mask=mask, **RUN)["chunks"]["done"] == 0  # the same run: resumed
    tifffile.imwrite(mask, np.zeros((2, 90, 75), np.uint8))
    with pytest.raises(EmaeError, match="other settings; pass --overwrite"):
        inpaint(*args, mask=mask, **RUN)
    assert inpaint(*args, mask=mask, overwrite=True, **RUN)["replaced_pixels"] == 0


# The noise model and the posterior mean -------------------------------------------------------


def _smooth_image(seed: int, shape=(512, 512)) -> np.ndarray:
    """A clean image smooth at the pixel scale, float64 in [0.1, 0.9]."""
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.normal(size=shape), 6)
    return 0.1 + 0.8 * (x - x.min()) / (x.max() - x.min())


def test_the_noise_model_of_poisson_gaussian_noise_is_recovered_in_the_images_units():
    rng = np.random.default_rng(0)
    clean = _smooth_image(1)
    noisy = rng.poisson(clean * 60) / 60 + rng.normal(0, 0.05, clean.shape)
    fitted = fit_noise_model([noisy])
    assert fitted.a == pytest.approx(1 / 60, rel=0.1)
    assert fitted.b == pytest.approx(0.05**2, rel=0.2)
    # The same image in uint16 counts: the model follows the units (variance scales by 1000^2,
    # the intensity by 1000), and a zero padding (clipped blocks) is left out of the fit.
    counts = np.zeros((600, 600), np.uint16)
    counts[44:556, 44:556] = np.rint(1000 + 1000 * noisy)
    scaled = fit_noise_model([counts])
    assert scaled.a == pytest.approx(1000 * fitted.a, rel=0.05)
    assert scaled.variance(np.float32(1500)) == pytest.approx(
        1e6 * fitted.variance(np.float32(0.5)), rel=0.05
    )
    with pytest.raises(EmaeError, match="no noise"):
        fit_noise_model([np.tile(np.linspace(0.0, 1.0, 256), (256, 1))])


def test_the_posterior_mean_is_better_than_the_prediction_and_the_pixel():
    """Where the prediction errs (a band of it is off by 0.3) the pixel's value comes back;
    where it is right the noise is removed; in mean squared error the combination beats both."""
    rng = np.random.default_rng(2)
    clean = _smooth_image(3, (1, 256, 256)[1:])[None].astype(np.float32)
    noise = NoiseModel(a=0.0, b=0.01, floor=1e-4)
    noisy = (clean + rng.normal(0, 0.1, clean.shape)).astype(np.float32)
    mu = (clean + rng.normal(0, 0.02, clean.shape)).astype(np.float32)
    mu[:, 100:140] += 0.3
    out = posterior_mean(noisy, mu, noise)

    def mse(v, rows=slice(None)):
        return float(np.mean((v[:, rows] - clean[:, rows]) ** 2))

    assert mse(out) < 0.5 * min(mse(mu), mse(noisy))
    assert mse(out, slice(110, 130)) < 0.2 * mse(mu, slice(110, 130))  # the band comes back
    assert mse(out, slice(0, 90)) < 0.2 * mse(noisy, slice(0, 90))  # the noise goes
    np.testing.assert_allclose(posterior_mean(noisy, mu, NoiseModel(0, 1e6, 1e6)), mu, atol=1e-4)


def test_noise_options(data, tmp_path, capsys):
    for text, message in [
        ("lots", "'fit', 'off' or 'A,B"),
        ("1,2,3,4", "'fit', 'off' or 'A,B"),
        ("-1,2", "needs finite a >= 0"),
        ("1,-2", "with B <= 0 give the smallest variance"),
        ("1,-2,0", "floor > 0"),
    ]:
        with pytest.raises(EmaeError, match=message):
            NoiseModel.parse(text)
    offset = NoiseModel.parse("1,-2,0.5")  # a dark offset: the floor holds below it
    np.testing.assert_allclose(offset.variance(np.array([0.0, 2.0, 5.0])), [0.5, 0.5, 3.0])
    assert NoiseModel.parse("0.5,4").variance(np.float32(10)) == pytest.approx(9.0)
    assert str(offset) == "variance 1 * intensity - 2 (at least 0.5)"
    given = denoise(data / "model", data / "stack.tif", tmp_path / "a.zarr", noise="0.5,4", **RUN)
    assert given["noise"] == {"a": 0.5, "b": 4.0, "floor": 0.04}
    off = denoise(data / "model", data / "stack.tif", tmp_path / "b.zarr", noise="off", **RUN)
    none = denoise(data / "model", data / "stack.tif", tmp_path / "b2.zarr", noise=None, **RUN)
    assert off["noise"] is None and none["noise"] is None
    with pytest.raises(EmaeError, match="--window must be a finite number >= 0"):
        denoise(data / "model", data / "stack.tif", tmp_path / "w.zarr", window=-1.0, **RUN)
    save_bundle(
        tmp_path / "dae",
        model=build_model("denoising-ae", channels=(8, 16)),
        model_name="denoising-ae",
        model_kwargs={"channels": [8, 16]},
        normalizer=PercentileNormalizer(20.0, 230.0, source_dtype="uint8"),
        config={},
    )
    with pytest.raises(EmaeError, match="'denoising-ae' sees the pixel"):
        denoise(tmp_path / "dae", data / "stack.tif", tmp_path / "c.zarr", noise="fit", **RUN)
    auto = denoise(tmp_path / "dae", data / "stack.tif", tmp_path / "d.zarr", **RUN)
    assert auto["noise"] is None  # a denoising autoencoder's output already saw the pixel
    args = ["denoise", str(data / "model"), str(data / "stack.tif"), "--out"]
    assert main([*args, str(tmp_path / "e.zarr"), "--scheduler", "synchronous", "-q"]) == 0
    assert "noise model: variance" in capsys.readouterr().out
    assert main([*args, str(tmp_path / "f.zarr"), "--noise", "x", "-q"]) == 1
    assert "'fit', 'off' or 'A,B" in capsys.readouterr().err


def test_a_noise_model_on_integer_images_does_not_step_with_the_grey_levels():
    """uint8 images with noise of 1-2 grey levels: the fit sees the noise and the rounding."""
    rng = np.random.default_rng(4)
    clean = 60 + 120 * (_smooth_image(5) - 0.1) / 0.8
    for sd in (0.7, 1.0, 1.5, 2.0):
        image = np.clip(np.rint(clean + rng.normal(0, sd, clean.shape)), 0, 255).astype(np.uint8)
        fitted = fit_noise_model([image])
        assert fitted.variance(np.float32(120)) == pytest.approx(sd * sd + 1 / 12, rel=0.1)


def test_where_no_noise_model_fits_auto_falls_back_and_fit_refuses(data, tmp_path, caplog):
    """A 2D image of 60 x 60 pixels has too few blocks to fit a noise model."""
    tifffile.imwrite(tmp_path / "small.tif", tifffile.imread(data / "stack.tif")[0, :60, :60])
    run = {**RUN, "overlap": 64}
    with caplog.at_level("WARNING"):
        auto = denoise(data / "model", tmp_path / "small.tif", tmp_path / "a.zarr", **run)
    assert auto["noise"] is None and "prediction alone" in caplog.text
    with pytest.raises(EmaeError, match=r"cannot fit a noise model: \d+ unclipped"):
        denoise(data / "model", tmp_path / "small.tif", tmp_path / "b.zarr", noise="fit", **run)
    restorer = Restorer.from_folder(data / "model", "denoise", noise="fit")
    with pytest.raises(EmaeError, match="not fitted yet"):
        restorer(np.zeros((1, 16, 16), np.uint8))
    restore_volume(restorer, data / "model", data / "stack.tif", tmp_path / "c.zarr", **RUN)
    assert restorer.noise == "fit"  # the caller's restorer is not changed by a run


def test_chunks_of_a_wide_section_are_denoised_without_seams(tmp_path):
    """Sections of 7 x 7 chunks: interior chunks see only their halo (64 = the U-Net's 48 and
    the noise window's 12, rounded up), and match one pass over the section."""
    stack = to_uint8(make_volume((1, 224, 224), seed=6))
    tifffile.imwrite(tmp_path / "wide.tif", stack)
    torch.manual_seed(0)
    model = build_model("blind-spot", **UNET).eval()
    save_bundle(
        tmp_path / "model",
        model=model,
        model_name="blind-spot",
        model_kwargs=UNET,
        normalizer=PercentileNormalizer(20.0, 230.0, source_dtype="uint8"),
        config={},
    )
    run = {**RUN, "overlap": 64}
    summary = denoise(
        tmp_path / "model", tmp_path / "wide.tif", tmp_path / "d.zarr", dtype="float32", **run
    )
    restorer = Restorer.from_folder(
        tmp_path / "model", "denoise", noise=NoiseModel(**summary["noise"])
    )
    whole = restorer(stack)[0, 0]
    restored = zarr.open_array(str(tmp_path / "d.zarr" / "0"), mode="r")[:]
    assert summary["noise"] is not None and summary["chunks"]["done"] == 49
    np.testing.assert_allclose(restored.reshape(whole.shape), whole, atol=1e-4)
