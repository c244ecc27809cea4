"""emae embed, emae map (fit and apply) and emae generate: files, resume, bad input, the CLI."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import tifffile
import torch

from emae import cli
from emae.commands import embed as embed_module
from emae.commands.embed import embed
from emae.commands.generate import generate
from emae.commands.latent_map import apply_map, fit_map
from emae.commands.pretrain import pretrain
from emae.errors import EmaeError
from emae.io.embedding import read_embedding
from emae.synth.sample_data import tiny_config, write_sample_data
from emae.train.config import PretrainConfig

pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("umap")


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_settings):
    """The tiny sample data and two tiny models trained on it: a conv-ae and a beta-vae."""
    root = tmp_path_factory.mktemp("latent")
    write_sample_data(root / "data", tiny_config(0))
    volume = root / "data" / "unlabeled" / "volume.tif"
    pretrain([volume], root / "ae", PretrainConfig(**tiny_settings, score="pixel"), progress=False)
    vae = PretrainConfig(
        **{**tiny_settings, "model": "beta-vae", "latent": "vector", "latent_dim": 6},
        score="pixel",
    )
    pretrain([volume], root / "vae", vae, progress=False)
    return root


def test_grid_embedding_has_one_row_per_patch_readable_by_pandas_and_pyarrow(data, tmp_path):
    volume = data / "data" / "unlabeled" / "volume.tif"  # (3, 256, 256), 32-pixel patches
    summary = embed(data / "ae", [volume], tmp_path / "e.parquet", stride=64, part_rows=10)
    assert summary["rows"] == 3 * 4 * 4  # (256 - 32) // 64 + 1 = 4 rows and columns
    frame = pd.read_parquet(tmp_path / "e.parquet")
    assert list(frame.columns) == ["source", "z", "y", "x", "label", "anomaly", "vector"]
    assert sorted(set(frame.y)) == sorted(set(frame.x)) == [16, 80, 144, 208]  # patch centres
    assert np.stack(frame.vector).shape == (48, summary["dims"])
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.num_rows == 48 and pa.types.is_fixed_size_list(table.schema.field("vector").type)
    assert frame.anomaly.notna().all() and (frame.anomaly >= 0).all()


def test_levels_and_latent_vectors_have_their_sizes(data, tmp_path):
    volume = data / "data" / "unlabeled" / "volume.tif"
    lat = embed(data / "ae", [volume], tmp_path / "a", sample=20, vector="latent", progress=False)
    lev = embed(data / "ae", [volume], tmp_path / "b", sample=20, vector="levels", progress=False)
    assert lat["dims"] == 4  # the tiny model's latent channels
    assert lev["dims"] == 2 * (8 + 8 + 16 + 4)  # mean and std of the stem, 2 levels, latent
    frame, vectors = read_embedding(tmp_path / "a")
    assert len(frame) == 20 and vectors.shape == (20, 4)


def test_residual_vectors_describe_what_the_model_could_not_reconstruct(data, tmp_path):
    """``vector="residual"``: the 74 handcrafted features of ``x - model(x)`` in the model's
    normalized units on the -1..1 scale, row by row the same as computed here by hand."""
    from emae.classify.features import handcrafted_features
    from emae.folders.autoencoder import load_bundle

    volume = data / "data" / "unlabeled" / "volume.tif"
    summary = embed(
        data / "ae", [volume], tmp_path / "r", stride=64, vector="residual", precision="fp32"
    )
    assert summary["dims"] == 74
    frame, vectors = read_embedding(tmp_path / "r")
    bundle = load_bundle(data / "ae")
    image = tifffile.imread(volume)
    centres = zip(frame.z, frame.y, frame.x, strict=True)
    patches = np.stack([image[z, y - 16 : y + 16, x - 16 : x + 16] for z, y, x in centres])
    x = torch.from_numpy(bundle.normalizer(patches).astype(np.float32)[:, None])
    with torch.inference_mode():
        residual = (x - bundle.model.eval()(x))[:, 0].numpy()
    expected = handcrafted_features(residual, value_range=(-1.0, 1.0))
    scale = np.abs(expected).max(axis=0) + 1e-6
    assert np.abs(vectors - expected).max(axis=0).max() < 1e-3 * scale.max()
    assert np.all(np.abs(vectors - expected) <= 1e-3 * scale + 1e-4)
    # a patch the model reconstructs exactly (a residual of zero) is not a patch of tissue
    flat = embed_module.patch_vectors(
        torch.nn.Identity(), bundle.normalizer, patches[:2], vector="residual"
    )
    assert np.allclose(flat[0], flat[1]) and not np.allclose(flat[0], vectors[0], atol=1e-3)


def test_a_residual_of_a_codec_or_inpainting_model_is_refused(data, tmp_path, monkeypatch):
    from emae.models.registry import model_spec

    class Codec:  # what the registry says of a codec
        inpainting, codec = False, True

    monkeypatch.setattr(embed_module, "model_spec", lambda name: Codec())
    volume = data / "data" / "unlabeled" / "volume.tif"
    with pytest.raises(EmaeError, match="needs an autoencoder of the image alone"):
        embed(data / "ae", [volume], tmp_path / "x", stride=64, progress=False)
    assert not (tmp_path / "x").exists()
    monkeypatch.setattr(embed_module, "model_spec", model_spec)
    assert embed(data / "ae", [volume], tmp_path / "x", stride=64, vector="levels")["rows"] == 48


def test_bf16_vectors_stay_close_to_fp32(data, tmp_path):
    """``--precision auto``: bf16 autocast where the CPU has it natively (fp32 elsewhere), the
    same vectors within bf16's rounding; the run's precision is part of its settings."""
    from emae.runtime import select_precision

    volume = data / "data" / "unlabeled" / "volume.tif"
    kwargs = dict(stride=64, vector="levels", progress=False)
    embed(data / "ae", [volume], tmp_path / "exact", precision="fp32", **kwargs)
    embed(data / "ae", [volume], tmp_path / "fast", precision="auto", **kwargs)
    (a, exact), (b, fast) = read_embedding(tmp_path / "exact"), read_embedding(tmp_path / "fast")
    assert fast.shape == exact.shape and fast.dtype == np.float32
    size = np.abs(exact).max(axis=0)  # per column: each column within bf16's rounding
    assert np.all(np.abs(fast - exact) <= 0.05 * size + 1e-4)
    assert np.corrcoef(a.anomaly, b.anomaly)[0, 1] > 0.98
    if select_precision(torch.device("cpu"), "auto") is not None:
        assert not np.array_equal(fast, exact)  # bf16 did run
    with pytest.raises(EmaeError, match="holds another embedding"):
        embed(data / "ae", [volume], tmp_path / "fast", precision="fp32", **kwargs)
    # the residual is computed in float32 whatever the precision (only the anomaly column moves)
    kwargs["vector"] = "residual"
    embed(data / "ae", [volume], tmp_path / "r-exact", precision="fp32", **kwargs)
    embed(data / "ae", [volume], tmp_path / "r-fast", precision="auto", **kwargs)
    np.testing.assert_array_equal(
        read_embedding(tmp_path / "r-exact")[1], read_embedding(tmp_path / "r-fast")[1]
    )


def test_an_embedding_from_before_the_precision_option_resumes_in_fp32(data, tmp_path):
    volume = data / "data" / "unlabeled" / "volume.tif"
    kwargs = dict(stride=64, part_rows=16, progress=False)
    embed(data / "ae", [volume], tmp_path / "e", precision="fp32", **kwargs)
    meta_path = tmp_path / "e" / "_emae_embed.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["precision"]
    meta_path.write_text(json.dumps(meta))
    (tmp_path / "e" / "_emae_done.json").unlink()  # stopped
    again = embed(data / "ae", [volume], tmp_path / "e", precision="fp32", **kwargs)
    assert again["resumed"] and again["parts"]["done"] == 0
    with pytest.raises(EmaeError, match="holds another embedding"):
        embed(data / "ae", [volume], tmp_path / "e", precision="auto", **kwargs)


def test_a_precision_the_device_lacks_is_refused_before_any_part(data, tmp_path, monkeypatch):
    def no_bf16(device, name="auto"):
        raise EmaeError(f"precision {name!r} requested but {device} has no native bf16 support")

    monkeypatch.setattr(embed_module, "select_precision", no_bf16)
    volume = data / "data" / "unlabeled" / "volume.tif"
    with pytest.raises(EmaeError, match="'bf16' requested but cpu has no native bf16"):
        embed(data / "ae", [volume], tmp_path / "e", stride=64, precision="bf16", progress=False)
    assert not list((tmp_path / "e").glob("part-*"))


def test_a_stopped_embedding_continues_with_the_parts_not_written(data, tmp_path, monkeypatch):
    volume = data / "data" / "unlabeled" / "volume.tif"
    kwargs = dict(stride=32, part_rows=16, progress=False)
    whole = embed(data / "ae", [volume], tmp_path / "whole", **kwargs)
    original, calls = embed_module.write_part, []

    def crash(store, k, rows, vectors):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(k)
        original(store, k, rows, vectors)

    monkeypatch.setattr(embed_module, "write_part", crash)
    with pytest.raises(KeyboardInterrupt):
        embed(data / "ae", [volume], tmp_path / "cut", **kwargs)
    with pytest.raises(EmaeError, match="unfinished"):
        read_embedding(tmp_path / "cut")
    monkeypatch.setattr(embed_module, "write_part", original)
    resumed = embed(data / "ae", [volume], tmp_path / "cut", **kwargs)
    assert resumed["parts"] == {"done": whole["parts"]["done"] - 3, "skipped": 3}
    a, b = read_embedding(tmp_path / "whole"), read_embedding(tmp_path / "cut")
    pd.testing.assert_frame_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(EmaeError, match=r"holds another embedding \(.*stride: 32 -> 64\); pass"):
        embed(data / "ae", [volume], tmp_path / "cut", stride=64, progress=False)
    # a setting that differs is named (e.g. a default that changed between versions)
    with pytest.raises(EmaeError, match="vector: residual -> levels"):
        embed(data / "ae", [volume], tmp_path / "cut", **{**kwargs, "vector": "levels"})


def test_a_failing_part_stops_the_run_naming_it_and_the_rest_stays(data, tmp_path, monkeypatch):
    volume = data / "data" / "unlabeled" / "volume.tif"
    kwargs = dict(stride=32, part_rows=16, progress=False)
    original, tries = embed_module.write_part, []

    def disk_full(store, k, rows, vectors):
        if k == 2:
            tries.append(k)
            raise OSError("No space left on device")
        original(store, k, rows, vectors)

    monkeypatch.setattr(embed_module, "write_part", disk_full)
    with pytest.raises(EmaeError, match=r"1 of \d+ parts failed, first part 2: OSError: No space"):
        embed(data / "ae", [volume], tmp_path / "e", retries=1, **kwargs)
    assert tries == [2, 2]  # tried again once
    monkeypatch.setattr(embed_module, "write_part", original)
    resumed = embed(data / "ae", [volume], tmp_path / "e", **kwargs)
    assert resumed["parts"]["done"] == 1


def test_parts_on_dask_workers_give_the_same_embedding(data, tmp_path):
    volume = data / "data" / "unlabeled" / "volume.tif"
    kwargs = dict(stride=32, part_rows=16, progress=False)
    here = embed(data / "ae", [volume], tmp_path / "here", **kwargs)
    there = embed(data / "ae", [volume], tmp_path / "there", workers=2, threads=1, **kwargs)
    assert there["parts"] == here["parts"] and there["rows"] == here["rows"]
    assert there["startup_seconds"] > 0 == here["startup_seconds"]
    a, b = read_embedding(tmp_path / "here"), read_embedding(tmp_path / "there")
    pd.testing.assert_frame_equal(a[0], b[0], check_exact=False, rtol=1e-4)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-4, atol=1e-5)


def test_labels_csv_rows_keep_their_labels_and_feature_columns(data, tmp_path):
    labels = data / "data" / "labels.csv"
    with open(labels, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*rows[0], "feat_area"])
        writer.writeheader()
        for i, row in enumerate(rows):
            row["image"] = str(labels.parent / row["image"])
            writer.writerow({**row, "feat_area": float(i)})
    embed(data / "ae", [], tmp_path / "e.parquet", labels=tmp_path / "labels.csv", progress=False)
    frame, _ = read_embedding(tmp_path / "e.parquet")
    assert list(frame.label) == [r["label"] for r in rows]
    assert list(frame.x) == [int(r["x"]) for r in rows]
    assert list(frame.feat_area) == [float(i) for i in range(len(rows))]
    summary = fit_map(tmp_path / "e.parquet", tmp_path / "map", n_neighbors=5)
    clusters = pd.read_csv(tmp_path / "map" / "clusters.csv")
    assert clusters.rows.sum() == len(rows) == summary["rows"]
    assert clusters.labels.str.contains("clean").any()  # label composition per cluster
    assert (tmp_path / "map" / "map_labels.png").is_file()


def test_detections_become_patches_centred_on_them(data, tmp_path):
    volume = data / "data" / "unlabeled" / "volume.tif"
    det = tmp_path / "out_detections.csv"
    det.write_text(
        "id,class,centroid_x,centroid_y,z,x_min,y_min,x_max,y_max,area,peak\n"
        "1,anomaly,100.4,50.6,1,90,40,110,60,300,2.5\n"
        "2,anomaly,3,250,2,0,240,8,255,40,1.5\n"
    )
    embed(data / "ae", [volume], tmp_path / "e.parquet", detections=det, progress=False)
    frame, _ = read_embedding(tmp_path / "e.parquet")
    assert list(frame.detection) == ["1", "2"]
    assert list(zip(frame.z, frame.y, frame.x, strict=True)) == [(1, 51, 100), (2, 240, 16)]
    det.write_text("image,label\na.png,x\n")
    with pytest.raises(EmaeError, match="not a detections table"):
        embed(data / "ae", [volume], tmp_path / "f.parquet", detections=det, progress=False)


def test_map_fits_places_and_flags_new_data(data, tmp_path):
    unlabeled = data / "data" / "unlabeled" / "volume.tif"
    embed(data / "ae", [unlabeled], tmp_path / "train.parquet", stride=16, progress=False)
    summary = fit_map(
        tmp_path / "train.parquet", tmp_path / "map", max_fit=300, montage=4, max_points=200
    )
    assert summary["fitted_rows"] == 300 and summary["rows"] == 3 * 15 * 15
    names = {p.name for p in (tmp_path / "map").iterdir()}
    assert {"config.json", "map.safetensors", "points.parquet", "clusters.csv"} <= names
    assert {"map_clusters.png", "map_anomaly.png", "montages"} <= names
    assert len(list((tmp_path / "map" / "montages").glob("cluster_*.png"))) == summary["clusters"]
    points = pd.read_parquet(tmp_path / "map" / "points.parquet")
    assert points.fitted.sum() == 300 and len(points) == 675
    # the tables count every row, though the plots drew 200 (read back with pandas)
    clusters = pd.read_csv(tmp_path / "map" / "clusters.csv").set_index("cluster")
    counts = points.cluster.value_counts()
    assert clusters.rows.to_dict() == counts.to_dict()
    for c, group in points.groupby("cluster"):
        assert clusters.novel_share[c] == pytest.approx(group.novel.mean(), abs=1e-6)
        assert clusters.mean_anomaly[c] == pytest.approx(group.anomaly.mean(), abs=1e-6)

    # new data: flat noise no patch of the training data looks like, beside normal patches
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, size=(2, 128, 128), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "noise.tif", noise)
    embed(
        data / "ae", [tmp_path / "noise.tif"], tmp_path / "new.parquet", stride=16, progress=False
    )
    applied = apply_map(
        tmp_path / "map", tmp_path / "new.parquet", tmp_path / "applied", max_points=20
    )
    assert applied["novel_share"] > 0.9
    sections = pd.read_csv(tmp_path / "applied" / "sections.csv")
    assert list(sections.z) == [0, 1] or list(sections.z) == [1, 0]
    new_points = pd.read_parquet(tmp_path / "applied" / "points.parquet")
    assert applied["rows"] == len(new_points) == sections.rows.sum() == 2 * 7 * 7
    assert applied["novel_share"] == pytest.approx(new_points.novel.mean(), abs=1e-6)
    assert (tmp_path / "applied" / "map_new.png").is_file()
    again = apply_map(tmp_path / "map", tmp_path / "train.parquet", tmp_path / "same")
    assert again["novel_share"] < 0.1


def test_a_map_refuses_an_embedding_of_another_model(data, tmp_path):
    volume = data / "data" / "unlabeled" / "volume.tif"
    embed(data / "ae", [volume], tmp_path / "a.parquet", stride=32, progress=False)
    other = tmp_path / "other"  # stands for the same model trained again (other weights)
    shutil.copytree(data / "ae", other)
    fit_map(tmp_path / "a.parquet", tmp_path / "map", n_neighbors=5)
    meta = json.loads((tmp_path / "a.parquet" / "_emae_embed.json").read_text())
    meta["model"] = {"path": str(other), "weights_sha256": "f" * 64}
    (tmp_path / "a.parquet" / "_emae_embed.json").write_text(json.dumps(meta))
    with pytest.raises(EmaeError, match=rf"embedded with model {other}, but the map .* model "):
        apply_map(tmp_path / "map", tmp_path / "a.parquet", tmp_path / "applied")
    assert not (tmp_path / "applied").exists()


def test_an_embedding_from_before_the_vector_option_is_mapped_by_its_pooling(data, tmp_path):
    volume = data / "data" / "unlabeled" / "volume.tif"
    embed(data / "ae", [volume], tmp_path / "old", stride=32, vector="levels", progress=False)
    meta_path = tmp_path / "old" / "_emae_embed.json"
    meta = json.loads(meta_path.read_text())
    meta["pooling"] = meta.pop("vector")  # what the first emae embed wrote
    meta_path.write_text(json.dumps(meta))
    fit_map(tmp_path / "old", tmp_path / "map", n_neighbors=5)
    saved = json.loads((tmp_path / "map" / "config.json").read_text())
    assert "levels" in json.dumps(saved)


def test_bad_inputs_are_one_line_and_write_nothing(data, tmp_path):
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, np.zeros((20, 20), np.uint8))
    with pytest.raises(EmaeError, match="20x20 pixels, smaller than the model's 32x32 patch"):
        embed(data / "ae", [small], tmp_path / "e.parquet", progress=False)
    assert not (tmp_path / "e.parquet").exists()
    volume = data / "data" / "unlabeled" / "volume.tif"
    embed(data / "ae", [volume], tmp_path / "tiny.parquet", sample=5, progress=False)
    with pytest.raises(EmaeError, match="has 5 rows; a map with n_neighbors=15"):
        fit_map(tmp_path / "tiny.parquet", tmp_path / "map")
    assert not (tmp_path / "map").exists()
    with pytest.raises(EmaeError, match="not an embedding of emae embed"):
        fit_map(data, tmp_path / "map")
    # NaN in a feature column (a table edited by hand)
    part = tmp_path / "tiny.parquet" / "part-00000.parquet"
    table = pq.read_table(part)
    pq.write_table(table.append_column("feat_x", pa.array([1.0, np.nan, 2, 3, 4])), part)
    with pytest.raises(EmaeError, match=r"feature columns \['feat_x'\] hold NaN"):
        fit_map(
            tmp_path / "tiny.parquet",
            tmp_path / "map",
            n_neighbors=2,
            novelty_neighbors=2,
            n_clusters=2,
        )
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(EmaeError, match="is not an embedding of emae embed; refusing"):
        embed(data / "ae", [volume], tmp_path / "mine", sample=5, progress=False, overwrite=True)
    assert (tmp_path / "mine" / "keep.txt").read_text() == "x"


def test_generate_writes_samples_interpolations_and_traversals(data, tmp_path):
    volume = data / "data" / "unlabeled" / "volume.tif"
    summary = generate(data / "vae", tmp_path / "gen", inputs=[volume], samples=5, pairs=2,
                       steps=4, units=3, at=[(0, 40, 40), (2, 200, 200)])  # fmt: skip
    assert summary["made"] == ["samples", "interpolations", "traversals"]
    assert tifffile.imread(tmp_path / "gen" / "samples.tif").shape == (5, 32, 32)
    inter = tifffile.imread(tmp_path / "gen" / "interpolations.tif")
    assert inter.shape == (8, 32, 32)
    kl = np.array(summary["unit_kl"])
    assert summary["traversal_units"] == list(np.argsort(-kl)[:3])
    assert tifffile.imread(tmp_path / "gen" / "traversals.tif").shape == (3 * 5, 32, 32)
    assert (tmp_path / "gen" / "traversals.png").is_file()
    with pytest.raises(EmaeError, match="conv-ae: it has no prior to sample from"):
        generate(data / "ae", tmp_path / "nothing")
    plain = generate(data / "ae", tmp_path / "ae_gen", inputs=[volume], pairs=1)
    assert plain["made"] == ["interpolations"] and "left out" in plain["samples"]


def test_the_cli_mirrors_the_api(data, tmp_path, capsys):
    volume = str(data / "data" / "unlabeled" / "volume.tif")
    emb = str(tmp_path / "e.parquet")
    assert cli.main(["embed", str(data / "ae"), volume, "--out", emb, "--stride", "32", "-q"]) == 0
    assert "192 rows of 74 values" in capsys.readouterr().out  # the default, residual
    assert cli.main(["map", emb, "--out", str(tmp_path / "map"), "--clusterer", "kmeans",
                     "--n-clusters", "3", "-q"]) == 0  # fmt: skip
    assert "in 3 clusters" in capsys.readouterr().out
    out = str(tmp_path / "applied")
    assert cli.main(["map", str(tmp_path / "map"), "--apply", emb, "--out", out, "-q"]) == 0
    assert "outside every known cluster" in capsys.readouterr().out
    gen = str(tmp_path / "gen")
    assert cli.main(["generate", str(data / "vae"), "--out", gen, "--at", "1,2", "3,4", "-q"]) == 1
    assert "--at takes two patch centres" in capsys.readouterr().err
    assert cli.main(["embed", str(data / "ae"), "--out", str(tmp_path / "x"), "-q"]) == 1
    assert "give image inputs, or a labels CSV" in capsys.readouterr().err
