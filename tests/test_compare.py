"""``emae compare``: the same folds and budgets for every method, resumable, honest tables."""

from __future__ import annotations

import json

import pytest

from emae.classify.config import FinetuneConfig
from emae.cli import main
from emae.commands.compare import compare
from emae.commands.pretrain import pretrain
from emae.errors import EmaeError
from emae.synth.sample_data import tiny_config, write_sample_data
from emae.train.config import PretrainConfig

FAST = FinetuneConfig(steps=4, batch_size=8, warmup_steps=1, precision="fp32", device="cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_settings):
    root = tmp_path_factory.mktemp("compare")
    write_sample_data(root / "data", tiny_config(0))
    config = PretrainConfig(**tiny_settings, score="pixel")
    pretrain([root / "data" / "unlabeled" / "volume.tif"], root / "ae", config, progress=False)
    return root


def test_compare_writes_every_fit_and_resumes(tmp_path, tiny, monkeypatch):
    out = tmp_path / "cmp"
    kwargs = dict(
        encoder=tiny / "ae",
        methods=["head", "svm-features", "latent-logreg", "cnn-scratch"],
        folds=2,
        budgets=[1, None],
        config=FAST.model_copy(update={"scratch_channels": (8, 16)}),
        progress=False,
    )
    summary = compare(tiny / "data" / "labels.csv", out, **kwargs)
    results = sorted(p.name for p in (out / "results").glob("*.json"))
    assert len(results) == 4 * 2 * 2
    row = json.loads((out / "results" / "head__1__fold0.json").read_text())
    n_classes = len(summary["class_counts"])
    assert 1 <= row["n_train"] <= n_classes  # at most one label per class
    for method in kwargs["methods"]:
        assert summary["methods"][method]["all"]["n_folds"] == 2
    assert (out / "learning_curves.png").stat().st_size > 0
    assert "| head |" in (out / "table.md").read_text()

    # A second run with the same settings only reads the finished fits.
    import emae.commands.compare as module

    def refuse(*args, **kw):
        raise AssertionError("refit a finished result")

    monkeypatch.setattr(module, "fit_predict", refuse)
    again = compare(tiny / "data" / "labels.csv", out, **kwargs)
    assert again == summary
    with pytest.raises(EmaeError, match="other settings"):
        compare(tiny / "data" / "labels.csv", out, **{**kwargs, "folds": 3})


def test_compare_refuses_what_it_cannot_do(tmp_path, tiny, capsys):
    with pytest.raises(EmaeError, match="need a pretrained encoder"):
        compare(tiny / "data" / "labels.csv", tmp_path / "a", methods=["head"])
    with pytest.raises(EmaeError, match="unknown method"):
        compare(tiny / "data" / "labels.csv", tmp_path / "b", methods=["forest"])
    argv = ["-q", "compare", "--labels", str(tiny / "data" / "labels.csv"), "--methods"]
    argv += ["svm-features", "--folds", "5", "--out", str(tmp_path / "c")]
    assert main(argv) == 1  # the tiny set has 2 samples of each artifact class
    err = capsys.readouterr().err
    assert "fewer than the 5 folds" in err and len(err.strip().splitlines()) == 1


def test_compare_head_semi_trains_on_the_unlabeled_images(tmp_path, tiny):
    labels = tiny / "data" / "labels.csv"
    volume = tiny / "data" / "unlabeled" / "volume.tif"
    with pytest.raises(EmaeError, match="head-semi needs unlabeled images"):
        compare(labels, tmp_path / "a", encoder=tiny / "ae", methods=["head-semi"])
    assert not (tmp_path / "a").exists()
    config = FAST.model_copy(update={"unlabeled_patches": 16, "unlabeled_ratio": 1})
    summary = compare(
        labels,
        tmp_path / "b",
        encoder=tiny / "ae",
        unlabeled=[volume],
        methods=["head-semi", "head-finetune"],
        folds=2,
        budgets=[None],
        config=config,
        progress=False,
    )
    semi = dict(summary["methods"]["head-semi"]["all"])
    plain = dict(summary["methods"]["head-finetune"]["all"])
    assert semi["n_folds"] == 2
    del semi["seconds"], plain["seconds"]
    # The same folds, labels and seed: only the unlabeled patches make the scores differ.
    assert semi != plain


def test_the_report_says_fold_by_fold_whether_pretraining_pays(tmp_path):
    import json

    from emae.report.comparison import pretraining_verdicts

    (tmp_path / "results").mkdir()
    scores = {"cnn-scratch": [0.4, 0.5, 0.6], "cnn-residual": [0.5, 0.55, 0.58], "head": [0.3] * 3}
    for method, by_fold in scores.items():
        for fold, f1 in enumerate(by_fold):
            row = {"method": method, "budget": "5", "fold": fold, "metrics": {"macro_f1": f1}}
            (tmp_path / "results" / f"{method}__5__fold{fold}.json").write_text(json.dumps(row))
    methods = {m: {"5": {"macro_f1": {"mean": sum(v) / 3, "std": 0.0}}} for m, v in scores.items()}
    [(title, text)] = pretraining_verdicts(tmp_path, methods, ["5"])
    assert title == "does pretraining pay? 5 labels / class"
    assert text.startswith("pays: CNN on the autoencoder's residual minus the CNN from scratch")
    assert "+0.043 ± 0.060 macro-F1 (ahead in 2 of 3 folds)" in text
    # Behind in most folds: it says so; without the CNN from scratch it says nothing.
    scores["cnn-residual"] = [0.3, 0.6, 0.5]
    for fold, f1 in enumerate(scores["cnn-residual"]):
        row = {"method": "cnn-residual", "budget": "5", "fold": fold, "metrics": {"macro_f1": f1}}
        (tmp_path / "results" / f"cnn-residual__5__fold{fold}.json").write_text(json.dumps(row))
    [(_, text)] = pretraining_verdicts(tmp_path, methods, ["5"])
    assert text.startswith("does not pay") and "ahead in 1 of 3 folds" in text
    assert pretraining_verdicts(tmp_path, {"head": methods["head"]}, ["5"]) == []
