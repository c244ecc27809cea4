"""The pipeline and the demo: every step on tiny data, resume, refusals, the report's content."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emae.commands.demo import demo_config, demo_config_path, run_demo
from emae.commands.pipeline import run_pipeline
from emae.commands.pipeline_config import load_pipeline_config
from emae.errors import EmaeError
from emae.report.restoration import noise_text

# The demo's steps with the least work that still exercises each one.
MICRO = {
    "pretrain": {"model": "conv-ae", "steps": 12, "val_every": 6, "score_patches": 32},
    "finetune": {"view": "auto", "steps": 10},
    "compare_methods": ["cnn-residual", "head", "svm-features"],
    "compare_folds": 2,
    "compare_budgets": "all",
    "compare_steps": 5,
    "detect_chunk": 192,
    "detect_workers": 1,
    "denoise": {"steps": 4, "batch_size": 4, "val_every": 2, "score_patches": 16},
    "inpaint": {"steps": 4, "batch_size": 4, "val_every": 2, "score_patches": 16},
    "latent": {
        "sample": 60,
        "map": {"n_neighbors": 5, "min_cluster_size": 5},
        "generator": {
            "model": "beta-vae",
            "latent": "vector",
            "latent_dim": 4,
            "steps": 4,
            "batch_size": 4,
            "val_every": 2,
            "score_patches": 16,
        },
    },
    "compress": {
        "lambdas": [0.01],
        "chunk": 64,
        "codec": {"steps": 4, "batch_size": 4, "val_every": 2, "score": "pixel",
                  "score_patches": 16},
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("emae.commands.demo.QUICK", MICRO)
        record = run_demo(out, quick=True, progress=False)
    return out, record


def test_every_step_ran_and_wrote_its_output(demo_run):
    out, record = demo_run
    steps = record["steps"]
    assert list(steps) == [
        "split", "pretrain", "score", "finetune", "evaluate", "compare", "detect",
        "pretrain-denoiser", "pretrain-inpainter", "denoise", "repair", "embed-unlabeled",
        "embed-labels", "embed-test", "map", "map-labels", "map-test", "pretrain-generator",
        "generate", "pretrain-codec-0.01", "compress-codec-0.01", "decompress-codec-0.01",
        "report",
    ]  # fmt: skip
    for name in (
        "autoencoder", "classifier", "evaluation", "compare", "detect.zarr", "denoiser",
        "inpainter", "denoised.zarr", "repair", "map", "map-labels", "map-test", "generator",
        "generated", "codecs/codec-0.01", "compressed/codec-0.01.zarr",
    ):  # fmt: skip
        assert (out / name).is_dir(), name
    assert (out / "compressed" / "codec-0.01.tif").is_file()
    assert (out / "scores" / "test.tif").is_file()
    assert (out / "report.html").stat().st_size > 50_000
    saved = json.loads((out / "pipeline.json").read_text())
    assert saved["steps"].keys() == steps.keys()
    assert saved["config"]["pretrain"]["steps"] == 12
    assert steps["pretrain"]["command"].startswith("emae pretrain ")
    assert "--config" in steps["pretrain"]["command"]
    assert (out / "configs" / "pretrain.yaml").is_file()


def test_split_keeps_groups_apart(demo_run):
    import csv

    out, _ = demo_run
    rows = {}
    for part in ("train", "test"):
        with (out / "labels" / f"{part}.csv").open() as f:
            rows[part] = list(csv.DictReader(f))
    assert rows["train"] and rows["test"]
    groups = {part: {r["group"] for r in r_} for part, r_ in rows.items()}
    assert not groups["train"] & groups["test"]


def test_rerun_skips_finished_steps(demo_run, caplog):
    out, record = demo_run
    before = (out / "autoencoder" / "model.safetensors").stat().st_mtime_ns
    with pytest.MonkeyPatch.context() as mp, caplog.at_level("INFO"):
        mp.setattr("emae.commands.demo.QUICK", MICRO)
        again = run_demo(out, quick=True, progress=False)
    assert (out / "autoencoder" / "model.safetensors").stat().st_mtime_ns == before
    assert "step pretrain: already done" in caplog.text
    assert again["steps"]["pretrain"] == record["steps"]["pretrain"]


def test_another_configuration_is_refused(demo_run):
    out, _ = demo_run
    config = demo_config(out / "data", quick=True, seed=1)
    with pytest.raises(EmaeError, match="another configuration"):
        run_pipeline(config, out, progress=False)


def test_foreign_folder_is_never_replaced(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(EmaeError, match="is not an emae demo"):
        run_demo(tmp_path, quick=True, overwrite=True, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_report_is_self_contained_and_complete(demo_run):
    out, _ = demo_run
    html = (out / "report.html").read_text()
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from a network
    images = _images(html)
    assert len(images) >= 10
    for png in images:
        with Image.open(io.BytesIO(png)) as im:
            im.load()
            assert im.size[0] > 50 and im.size[1] > 50
    for table in ("label-counts", "scores", "evaluation", "compare", "timings"):
        assert f'id="table-{table}"' in html, table
    for words in ("TPR", "TNR", "PPV", "NPV", "macro-F1", "pixel AUROC", "AUPRO", "emae pretrain"):
        assert words in html, words
    for section in (
        "data", "autoencoder", "anomaly", "classifier", "compare", "detect", "denoise", "repair",
        "latent", "compression",
    ):  # fmt: skip
        assert f'<section id="{section}">' in html, section
    assert 'id="table-compression-levels"' in html and "rate-distortion curves" in html
    assert "repair panels" in html and "pixels replaced" in html
    restore = json.loads((out / "denoised.zarr" / "emae_restore.json").read_text())
    assert restore.get("noise") and noise_text(restore["noise"]) in html  # fitted on the input
    for words in ("map by cluster", "table-latent-clusters", "table-latent-novelty", "traversals"):
        assert words in html, words


def test_report_numbers_come_from_the_runs(demo_run):
    out, _ = demo_run
    html = (out / "report.html").read_text()
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert f"{metrics['macro_f1']:.3f}" in html
    summary = json.loads((out / "autoencoder" / "training.json").read_text())
    assert f"{summary['steps_done']} x" in html


def test_demo_yaml_in_configs_is_the_packaged_one():
    repo = Path(__file__).resolve().parents[1]
    assert (repo / "configs" / "demo.yaml").read_text() == demo_config_path().read_text()


def test_config_paths_resolve_against_the_file(tmp_path):
    (tmp_path / "run.yaml").write_text(
        "unlabeled: [a/*.tif, /abs/b.zarr]\nlabels: labels.csv\npretrain: {steps: 5}\n"
    )
    config = load_pipeline_config(tmp_path / "run.yaml")
    assert config.unlabeled == [str(tmp_path / "a/*.tif"), "/abs/b.zarr"]
    assert config.labels == str(tmp_path / "labels.csv")
    assert config.pretrain_config().steps == 5


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("unlabeled: [a.tif]\nlabels: l.csv\nunknown_key: 1\n", "unknown_key"),
        ("unlabeled: [a.tif]\nlabels: l.csv\npretrain: {stepz: 5}\n", "stepz"),
        ("unlabeled: [a.tif]\nlabels: l.csv\nfinetune: {steps: 0}\n", "steps"),
        ("unlabeled: [a.tif]\nlabels: l.csv\ncompare_budgets: 'five'\n", "budget"),
        ("unlabeled: [a.tif]\nlabels: l.csv\ncompare_methods: [magic]\n", "magic"),
        ("unlabeled: [a.tif]\nlabels: l.csv\ncompress: {lambdas: [0.01]}\n", "detect_input"),
        ("unlabeled: [a.tif]\nlabels: l.csv\ncompress: {codec: {model: vae}}\n", "codec"),
        ("unlabeled: [a.tif]\nlabels: l.csv\ndenoise_noise: loud\n", "denoise_noise.*A,B"),
        ("labels: l.csv\n", "unlabeled"),
        ("- a\n- b\n", "mapping"),
    ],
)
def test_bad_configuration_is_one_clear_error(tmp_path, text, words):
    (tmp_path / "run.yaml").write_text(text)
    with pytest.raises(EmaeError, match=words) as info:
        load_pipeline_config(tmp_path / "run.yaml")
    assert "\n" not in str(info.value)


def _chromium() -> str | None:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


def test_report_renders_in_headless_chromium(demo_run, tmp_path):
    import subprocess

    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (apt install chromium)")
    out, _ = demo_run
    url = (out / "report.html").resolve().as_uri()
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    base += [f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000"]
    dom = subprocess.run(
        [*base, "--dump-dom", url], capture_output=True, text=True, timeout=180, check=True
    ).stdout
    n = len(re.findall(r"<img ", dom))
    assert n >= 10
    assert f'data-images="{n}"' in dom and f'data-images-decoded="{n}"' in dom
    for table in ("label-counts", "evaluation", "compare", "timings"):
        assert f'id="table-{table}"' in dom, table
    shots = Path(__file__).resolve().parents[1] / "test-artifacts"
    shots.mkdir(exist_ok=True)
    shot = shots / "report.png"
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1280,2000", url],
        capture_output=True,
        timeout=180,
        check=True,
    )
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        grey = np.asarray(im.convert("L"))
    assert np.unique(grey).size > 20  # a page, not a blank canvas


def test_same_seed_same_results(demo_run, tmp_path):
    import tifffile

    out, _ = demo_run
    again = tmp_path / "again"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("emae.commands.demo.QUICK", MICRO)
        run_demo(again, quick=True, progress=False)
    for name in ("evaluation/metrics.json", "labels/test.csv", "detect_detections.csv"):
        mine = (again / name).read_text().replace(str(again.resolve()), "OUT")
        assert mine == (out / name).read_text().replace(str(out.resolve()), "OUT"), name
    np.testing.assert_array_equal(
        tifffile.imread(again / "scores" / "test.tif"), tifffile.imread(out / "scores" / "test.tif")
    )

    def without_times(path: Path) -> str:
        return re.sub(r'"seconds": [0-9.e+-]+', "", path.read_text())

    assert without_times(again / "compare" / "summary.json") == without_times(
        out / "compare" / "summary.json"
    )


def test_report_of_single_output_folders(demo_run, tmp_path):
    from emae.report import write_report

    out, _ = demo_run
    parts = [out / "autoencoder", out / "evaluation", out / "compare", out / "detect.zarr"]
    html = write_report(parts, tmp_path / "r.html").read_text()
    for section in ("autoencoder", "classifier", "compare", "detect", "reproduce"):
        assert f'<section id="{section}">' in html, section
    assert len(_images(html)) >= 5
    with pytest.raises(EmaeError, match="already exists"):
        write_report(parts, tmp_path / "r.html")


def test_report_refuses_what_is_not_an_emae_output(tmp_path):
    from emae.report import write_report

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(EmaeError, match="not an emae output"):
        write_report([tmp_path], tmp_path / "r.html")
    with pytest.raises(EmaeError, match="no such file"):
        write_report([tmp_path / "missing"], tmp_path / "r.html")
    with pytest.raises(EmaeError, match=r"\.html"):
        write_report([tmp_path], tmp_path / "r.txt")
    (tmp_path / "r.html").write_text("<p>someone's page</p>")
    with pytest.raises(EmaeError, match="not an emae report"):
        write_report([tmp_path], tmp_path / "r.html", overwrite=True)
    assert (tmp_path / "r.html").read_text() == "<p>someone's page</p>"


def test_cli_report_and_pipeline_errors(demo_run, tmp_path, capsys):
    from emae.cli import main

    out, _ = demo_run
    assert main(["-q", "report", str(out), "--out", str(tmp_path / "r.html")]) == 0
    assert "self-contained" in capsys.readouterr().out
    (tmp_path / "bad.yaml").write_text("unlabeled: [a.tif]\nlabels: l.csv\nsteps: 5\n")
    assert main(["pipeline", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "steps" in err[0] and not (tmp_path / "run").exists()
