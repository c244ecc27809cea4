"""Learned compression: the entropy model, the bitstream, and ``emae compress`` / ``decompress``."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr

from emae.cli import main
from emae.commands.compress import compress, decode_region, decompress
from emae.commands.pretrain import pretrain
from emae.compress import ChunkCoder, CorruptChunk, decode_symbols, encode_symbols
from emae.compress.container import chunk_file, parse_region, read_meta
from emae.errors import EmaeError
from emae.io import write_tiff
from emae.models import build_model
from emae.models.entropy import RANGE, FactorizedDensity
from emae.synth.tissue import make_volume, to_uint8
from emae.train.config import PretrainConfig
from emae.train.losses import rate_distortion_loss
from emae.volume.chunks import Chunk

RUN = {"scheduler": "synchronous", "chunk": 32, "progress": False}


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_settings) -> Path:
    """A (2, 90, 75) uint8 stack with a pixel size, two tiny codecs trained on it (seeds 0 and
    1: the same architecture, different weights) and a tiny hyperprior codec."""
    root = tmp_path_factory.mktemp("compress")
    stack = to_uint8(make_volume((2, 90, 75), seed=3))
    tifffile.imwrite(
        root / "stack.tif",
        stack,
        imagej=True,
        resolution=(1 / 0.004, 1 / 0.004),
        metadata={"axes": "ZYX", "spacing": 0.03, "unit": "um"},
    )
    settings = {**tiny_settings, "channels": (8, 8), "latent_channels": 8, "score": "pixel"}
    for name, model, seed, steps in (
        ("codec0", "codec", 0, 80),
        ("codec1", "codec", 1, 80),
        ("hyper0", "codec-hyperprior", 0, 200),
    ):
        config = PretrainConfig(**{**settings, "steps": steps}, model=model, seed=seed)
        pretrain([root / "stack.tif"], root / name, config, progress=False)
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_codec_defaults_apply_only_to_options_the_run_leaves_unset():
    config = PretrainConfig(model="codec")
    assert (config.channels, config.latent_channels, config.patch_size) == ((32,) * 4, 64, 64)
    assert PretrainConfig(model="codec", patch_size=128).patch_size == 128
    assert PretrainConfig().channels == (32, 64, 128)


def test_coding_tables_are_the_training_density_at_the_integers():
    torch.manual_seed(0)
    density = FactorizedDensity(3)
    assert not density.has_tables
    density.update_tables()
    pmf = density.pmf.numpy()
    assert pmf.shape == (3, 2 * RANGE + 2) and (pmf > 0).all()
    np.testing.assert_allclose(pmf.sum(axis=1), 1.0, rtol=1e-12)
    k = torch.arange(-20, 21, dtype=torch.float32)
    y = k.view(1, 1, 1, -1).expand(1, 3, 1, -1)
    likelihood = density.likelihood(y)[0, :, 0].detach().double().numpy()
    np.testing.assert_allclose(likelihood, pmf[:, k.long().numpy() + RANGE], rtol=1e-4)


def test_bitstreams_round_trip_escapes_and_cost_what_the_tables_say():
    torch.manual_seed(0)
    density = FactorizedDensity(4)
    density.update_tables()
    pmf = density.pmf.numpy()
    symbols = np.rint(np.random.default_rng(0).laplace(0, 6, (4, 24, 20))).astype(np.int32)
    symbols[0, 0, 0], symbols[3, 5, 7] = 1_000, -70_000  # beyond the table: escaped
    data = encode_symbols(symbols, pmf)
    assert data == encode_symbols(symbols, pmf)  # deterministic
    np.testing.assert_array_equal(decode_symbols(data, pmf, symbols.shape), symbols)
    inside = np.abs(symbols) <= RANGE
    index = np.where(inside, symbols + RANGE, 2 * RANGE + 1)
    ideal = -np.log2(np.take_along_axis(pmf, index.reshape(4, -1), axis=1)).sum() + 2 * 32
    assert ideal < 8 * len(data) < 1.01 * ideal + 8 * 8 + 64  # header and the coder's last words


def test_the_hyperprior_codes_with_the_tables_its_scales_pick():
    from emae.models.hyperprior import gaussian_tables, scale_indices, scale_table

    tables = gaussian_tables()
    assert tables.shape == (64, 2 * RANGE + 2) and (tables > 0).all()
    np.testing.assert_allclose(tables.sum(axis=1), 1.0, rtol=1e-12)
    widths = (tables[:, : 2 * RANGE + 1] > 1e-3).sum(axis=1)
    assert (np.diff(widths) >= 0).all() and widths[0] == 1  # wider with the scale
    scales = torch.tensor([0.05, 0.11, 0.2, 300.0], dtype=torch.float64)
    picked = scale_indices(scales).numpy()
    assert picked[0] == picked[1] == 0 and picked[-1] == 63
    assert scale_table()[picked[2]] >= 0.2 > scale_table()[picked[2] - 1]
    torch.manual_seed(0)
    model = build_model("codec-hyperprior", channels=(8, 8), latent_channels=4)
    z = torch.randint(-3, 4, (1, 32, 2, 3)).double()
    exact = model.gaussian_parameters(z, exact=model.exact_synthesis())
    with torch.no_grad():
        fast = model.gaussian_parameters(z.float())
    for a, b in zip(exact, fast, strict=True):
        assert a.dtype == torch.float64
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_bitstreams_are_refused(damage):
    density = FactorizedDensity(2)
    density.update_tables()
    pmf = density.pmf.numpy()
    data = bytearray(encode_symbols(np.zeros((2, 8, 8), np.int32) + 3, pmf))
    data = data[:-4] if damage == "truncate" else data[:12] + bytes([data[12] ^ 1]) + data[13:]
    with pytest.raises(CorruptChunk):
        decode_symbols(bytes(data), pmf, (2, 8, 8))


def test_the_rate_distortion_loss_reaches_every_part_of_the_codec():
    torch.manual_seed(0)
    model = build_model("codec", channels=(8, 8), latent_channels=4)
    x = torch.rand(2, 1, 32, 32)
    total, bpp, mse = rate_distortion_loss(model, x, lmbda=0.01, generator=torch.Generator())
    total.backward()
    assert bpp > 0 and mse > 0
    for name, parts in [("analysis", model.analysis), ("synthesis", model.synthesis)]:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in parts.parameters()), name
    assert all(p.grad is not None for p in model.entropy.parameters())
    with torch.no_grad():
        evaluation = rate_distortion_loss(model, x, lmbda=0.01, noise=False)
    assert evaluation[0] == rate_distortion_loss(model, x, lmbda=0.01, noise=False)[0]


@pytest.mark.parametrize("model", ["codec0", "hyper0"])
def test_compress_round_trip_shape_dtype_rate_and_determinism(data, tmp_path, model):
    summary = compress(data / model, data / "stack.tif", tmp_path / "a.zarr", **RUN)
    files = sorted((tmp_path / "a.zarr" / "bitstreams").rglob("y*_x*"))
    assert len(files) == 2 * 3 * 3  # 2 sections of 3 x 3 chunks
    size = sum(f.stat().st_size for f in files)
    assert summary["bytes"] == size and summary["pixels"] == 2 * 90 * 75
    assert summary["bits_per_pixel"] == pytest.approx(8 * size / (2 * 90 * 75))
    assert summary["compression_ratio"] == pytest.approx(2 * 90 * 75 / size)
    # Another run writes the same bytes.
    compress(data / model, data / "stack.tif", tmp_path / "b.zarr", **RUN)
    assert [_sha(f) for f in files] == [
        _sha(tmp_path / "b.zarr" / f.relative_to(tmp_path / "a.zarr")) for f in files
    ]
    meta = zarr.open_group(str(tmp_path / "a.zarr"), mode="r").attrs["emae_codec"]
    assert meta["shape"] == [2, 90, 75] and meta["dtype"] == "uint8" and meta["axes"] == "ZYX"
    assert meta["pixel_size_nm"] == pytest.approx([30.0, 4.0, 4.0])
    decoded, failed = decode_region(tmp_path / "a.zarr")
    assert failed == [] and decoded.shape == (2, 90, 75) and decoded.dtype == np.uint8
    threads = torch.get_num_threads()
    try:  # the pixels do not depend on the threads allowed
        torch.set_num_threads(1 if threads > 1 else 2)
        again, _ = decode_region(tmp_path / "a.zarr")
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(decoded, again)
    assert torch.get_num_threads() == threads
    # Each chunk is its codec's decoding of that chunk alone.
    coder = ChunkCoder.from_folder(data / model)
    c = Chunk(1, 32, 64, 64, 75)
    alone = coder.decode(chunk_file(tmp_path / "a.zarr", c).read_bytes(), (32, 11))
    np.testing.assert_array_equal(decoded[1, 32:64, 64:75], np.clip(np.rint(alone), 0, 255))
    stack = tifffile.imread(data / "stack.tif").astype(float)
    assert np.abs(decoded - stack).mean() < np.abs(stack - stack.mean()).mean()


@pytest.mark.parametrize("model", ["codec0", "hyper0"])
def test_regions_decode_from_their_own_chunks_into_tiff_and_ome_zarr(data, tmp_path, model):
    container = tmp_path / "a.zarr"
    compress(data / model, data / "stack.tif", container, **RUN)
    whole, _ = decode_region(container)
    part, _ = decode_region(container, "1:2,40:70,10:75")
    np.testing.assert_array_equal(part, whole[1:2, 40:70, 10:75])
    shutil.rmtree(container / "bitstreams" / "0")  # section 0 is not needed for that region
    np.testing.assert_array_equal(decode_region(container, "1:2,40:70,10:75")[0], part)
    decompress(container, tmp_path / "part.tif", region="1:2,40:70,10:75")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "part.tif"), part)
    decompress(container, tmp_path / "part.zarr", region="1:2,40:70,:")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(str(tmp_path / "part.zarr")))())
    np.testing.assert_array_equal(np.asarray(nodes[0].data[0]), whole[1:2, 40:70, :])


def test_an_interrupted_compression_resumes_to_the_same_bytes(data, tmp_path, monkeypatch):
    compress(data / "codec0", data / "stack.tif", tmp_path / "a.zarr", **RUN)
    import emae.volume.compress as module

    original = module.write_chunk_record

    def fail_in_section_one(out, name, qc, pieces):
        if qc["z"] == 1:
            raise RuntimeError("node lost")
        return original(out, name, qc, pieces)

    monkeypatch.setattr(module, "write_chunk_record", fail_in_section_one)
    second = tmp_path / "b.zarr"
    with pytest.raises(EmaeError, match="9 of 18 chunks failed"):
        compress(data / "codec0", data / "stack.tif", second, retries=0, **RUN)
    monkeypatch.setattr(module, "write_chunk_record", original)
    summary = compress(data / "codec0", data / "stack.tif", second, **RUN)
    assert summary["chunks"] == {"done": 9, "skipped": 9}
    for f in sorted((tmp_path / "a.zarr" / "bitstreams").rglob("y*_x*")):
        assert _sha(f) == _sha(second / f.relative_to(tmp_path / "a.zarr"))


def test_decompress_refuses_another_model_and_reports_damaged_chunks(data, tmp_path):
    container = tmp_path / "a.zarr"
    compress(data / "codec0", data / "stack.tif", container, **RUN)
    with pytest.raises(EmaeError, match=r"encoded by the model .*codec0.* not by .*codec1"):
        decode_region(container, model=data / "codec1")
    whole, _ = decode_region(container)
    damaged = chunk_file(container, Chunk(0, 32, 32, 64, 64))
    damaged.write_bytes(damaged.read_bytes()[:-3])
    with pytest.raises(EmaeError, match=r"1 chunk\(s\) .* could not be decoded .*z0_y32_x32"):
        decompress(container, tmp_path / "out.tif")
    out = tifffile.imread(tmp_path / "out.tif")
    assert (out[0, 32:64, 32:64] == 0).all()
    out[0, 32:64, 32:64] = whole[0, 32:64, 32:64]
    np.testing.assert_array_equal(out, whole)


@pytest.mark.parametrize(
    ("region", "message"),
    [
        ("0:3,0:90,0:75", "outside the volume"),
        ("0:1,50:40,:", "empty or outside"),
        ("0:1,0:90", "give z0:z1,y0:y1,x0:x1"),
        ("0:1,a:b,:", "is not start:stop"),
    ],
)
def test_bad_regions_are_refused(region, message):
    with pytest.raises(EmaeError, match=message):
        parse_region(region, (2, 90, 75))


def test_compress_refuses_bad_input(data, tmp_path, tiny_model):
    float_image = tmp_path / "float.tif"
    write_tiff(float_image, np.random.default_rng(0).random((40, 40), np.float32), axes="YX")
    with pytest.raises(EmaeError, match="float32"):
        compress(data / "codec0", float_image, tmp_path / "f.zarr", **RUN)
    with pytest.raises(EmaeError, match="is not a codec"):
        compress(tiny_model, data / "stack.tif", tmp_path / "m.zarr", **RUN)
    with pytest.raises(EmaeError, match=r"must be a \.zarr folder"):
        compress(data / "codec0", data / "stack.tif", tmp_path / "x.tif", **RUN)
    with pytest.raises(EmaeError, match="multiple of 4"):
        compress(data / "codec0", data / "stack.tif", tmp_path / "c.zarr", **{**RUN, "chunk": 30})
    foreign = tmp_path / "mine.zarr"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(EmaeError, match="is not an emae compressed image"):
        compress(data / "codec0", data / "stack.tif", foreign, overwrite=True, **RUN)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(EmaeError, match="not an emae compressed image"):
        read_meta(foreign)


def test_cli_compress_and_decompress(data, tmp_path, capsys):
    container = tmp_path / "a.zarr"
    args = ["compress", str(data / "codec0"), str(data / "stack.tif"), "--out", str(container)]
    assert main([*args, "--chunk", "32", "--scheduler", "synchronous", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "bits per pixel" in printed and "compression ratio" in printed
    out = tmp_path / "out.tif"
    assert main(["decompress", str(container), "--out", str(out), "--region", "0:1,:,:"]) == 0
    np.testing.assert_array_equal(tifffile.imread(out), decode_region(container, "0:1,:,:")[0])
    assert json.loads((data / "codec0" / "config.json").read_text())["model"] == "codec"


def test_the_report_measures_each_container_on_the_same_pixels(data, tmp_path):
    from emae.compress.quality import psnr
    from emae.report.compression import compression_section

    summaries = [
        compress(data / f"codec{i}", data / "stack.tif", tmp_path / f"c{i}.zarr", **RUN)
        for i in (0, 1)
    ]
    section = compression_section([tmp_path / "c0.zarr", tmp_path / "c1.zarr"])
    table = next(b for b in section["blocks"] if b.get("id") == "compression-levels")
    assert len(table["rows"]) == 2
    stack = tifffile.imread(data / "stack.tif")
    found = {row[0]: row for row in table["rows"]}
    for i, summary in enumerate(summaries):
        row = found[f"c{i}.zarr"]
        assert row[2] == f"{summary['bits_per_pixel']:.3f}"  # the region is the whole stack
        decoded, _ = decode_region(tmp_path / f"c{i}.zarr")
        expected = np.mean([psnr(a, b) for a, b in zip(stack, decoded, strict=True)])
        assert row[3] == f"{expected:.2f}"
    assert sum(b["type"] == "figure" for b in section["blocks"]) == 2


def test_compress_settings_are_validated():
    from emae.compress.config import CompressSettings

    settings = CompressSettings(lambdas=[0.02, 0.002, 0.02], codec={"steps": 5})
    assert settings.lambdas == [0.002, 0.02] and settings.codec.model == "codec"
    assert settings.codec.latent_channels == 64  # the codec's own defaults apply
    with pytest.raises(ValueError, match="the model is codec, not conv-ae"):
        CompressSettings(codec={"model": "conv-ae"})
    with pytest.raises(ValueError, match="lambdas must be > 0"):
        CompressSettings(lambdas=[0.01, 0])


def test_a_2d_image_round_trips_through_both_output_formats(data, tmp_path):
    image = tmp_path / "plane.tif"
    write_tiff(image, tifffile.imread(data / "stack.tif")[1, :70, :66], axes="YX")
    container = tmp_path / "plane.zarr"
    compress(data / "codec0", image, container, **RUN)
    whole, failed = decode_region(container)
    assert failed == [] and whole.shape == (70, 66) and whole.dtype == np.uint8
    np.testing.assert_array_equal(decode_region(container, "10:50,33:66")[0], whole[10:50, 33:66])
    decompress(container, tmp_path / "plane.out.tif")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "plane.out.tif"), whole)
    decompress(container, tmp_path / "plane.out.zarr")
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "plane.out.zarr" / "0"))[:], whole)
    with pytest.raises(EmaeError, match="already exists"):
        decompress(container, tmp_path / "plane.out.tif")
