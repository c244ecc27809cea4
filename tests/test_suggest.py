"""Active learning: which patches to label next, and the filled file back into finetune."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from emae.classify.config import FinetuneConfig
from emae.classify.suggest import (
    anomaly_rank,
    class_balance,
    priority,
    select_batch,
    uncertainty,
)
from emae.cli import main
from emae.commands.finetune import finetune
from emae.commands.pretrain import pretrain
from emae.commands.suggest import suggest
from emae.data.labels import load_label_files, load_labels
from emae.errors import EmaeError
from emae.synth.sample_data import tiny_config, write_sample_data
from emae.train.config import PretrainConfig

FAST = dict(steps=6, batch_size=8, warmup_steps=1, precision="fp32", device="cpu")


def test_uncertainty_is_one_minus_the_margin_of_the_two_best_classes():
    proba = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.6, 0.3, 0.1]])
    np.testing.assert_allclose(uncertainty(proba), [1.0, 0.0, 0.7])
    np.testing.assert_allclose(anomaly_rank([3.0, 1.0, 2.0]), [1.0, 0.0, 0.5])
    # The anomaly rank weighs the priority: the most typical candidate comes last ...
    np.testing.assert_allclose(priority(proba, [3.0, 1.0, 2.0]), [1.0, 0.0, 0.35])
    # ... or, with a floor of 0.5, counts half as much as the most unusual one.
    np.testing.assert_allclose(priority(proba, [3.0, 1.0, 2.0], floor=0.5), [1.0, 0.0, 0.525])
    np.testing.assert_allclose(priority(proba, [3.0, 1.0, 2.0], floor=1.0), uncertainty(proba))
    with pytest.raises(EmaeError, match="floor must be in"):
        priority(proba, [3.0, 1.0, 2.0], floor=2.0)
    with pytest.raises(EmaeError, match="2 anomaly scores for 3 candidates"):
        priority(proba, [1.0, 2.0])


def test_candidates_of_rarely_labeled_classes_weigh_more():
    proba = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])
    counts = [10, 4, 1]  # class 2 is the least labeled: its rarity is 1, class 0's 2 / 11
    np.testing.assert_allclose(class_balance(proba, counts), [(2 / 11 + 2 / 5) / 2, 0.7, 1.0])
    # Equally uncertain candidates: the one that is likely of a rare class comes first.
    assert np.argmax(priority(proba[:2], None, counts)) == 1
    np.testing.assert_allclose(priority(proba, None, [3, 3, 3]), uncertainty(proba))
    with pytest.raises(EmaeError, match="one per class"):
        class_balance(proba, [1, 2])


def test_a_batch_spreads_over_the_pool_instead_of_taking_near_duplicates():
    rng = np.random.default_rng(0)
    # Two tight clusters of equally uncertain candidates and one far, slightly less uncertain.
    vectors = np.concatenate([rng.normal(0, 0.01, (20, 2)), rng.normal(5, 0.01, (20, 2))])
    vectors = np.concatenate([vectors, [[0.0, 10.0]]])
    weights = np.concatenate([np.ones(40), [0.9]])
    chosen, distance = select_batch(vectors, weights, 3)
    assert {int(c) // 20 for c in chosen} == {0, 1, 2}  # one from each cluster and the far one
    assert distance[0] == 1.0 and (distance[1:] > 0.4).all()
    # Candidates like the labeled ones are left for last.
    chosen, _ = select_batch(vectors, weights, 1, labeled=vectors[:20] + 0.001)
    assert chosen[0] >= 20
    # Weight decides between candidates equally far from everything.
    chosen, _ = select_batch(np.eye(3), [0.1, 0.9, 0.5], 2)
    assert chosen.tolist() == [1, 2]


def test_by_class_each_pick_goes_to_the_class_labeled_least_so_far():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(40, 3))
    # The first 30 candidates are likely of class 0, the last 10 of class 1.
    proba = np.where(np.arange(40)[:, None] < 30, [0.9, 0.1], [0.2, 0.8])
    weights = np.ones(40)
    chosen, _ = select_batch(vectors, weights, 1, proba=proba, counts=[10, 0])
    assert chosen[0] >= 30
    chosen, _ = select_batch(vectors, weights, 1, proba=proba, counts=[0, 10])
    assert chosen[0] < 30
    # A batch with nothing labeled alternates between the classes, though most candidates
    # are of class 0; without the probabilities it follows the pool.
    chosen, _ = select_batch(vectors, weights, 6, proba=proba)
    assert sum(c >= 30 for c in chosen) == 3
    plain, _ = select_batch(vectors, weights, 6)
    assert sum(c >= 30 for c in plain) < 3
    # A class that no candidate can be of does not stall the batch: the weight decides.
    never = np.stack([np.ones(3), np.zeros(3)], axis=1)
    chosen, _ = select_batch(np.eye(3), [0.1, 0.9, 0.5], 2, proba=never, counts=[5, 0])
    assert chosen.tolist() == [1, 2]
    with pytest.raises(EmaeError, match="give proba too"):
        select_batch(vectors, weights, 1, counts=[1, 1])
    with pytest.raises(EmaeError, match="proba must be 40 rows"):
        select_batch(vectors, weights, 1, proba=proba[:5])
    with pytest.raises(EmaeError, match="counts must be 2 finite numbers"):
        select_batch(vectors, weights, 1, proba=proba, counts=[1, -1])


def test_select_batch_refuses_a_budget_larger_than_the_pool():
    with pytest.raises(EmaeError, match="cannot choose 5 of 3 candidates"):
        select_batch(np.eye(3), np.ones(3), 5)
    with pytest.raises(EmaeError, match="weights must be 3 finite values"):
        select_batch(np.eye(3), [1.0, -1.0, 0.0], 1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_settings):
    """Tiny sample data, an autoencoder and a classifier trained on its labels."""
    root = tmp_path_factory.mktemp("suggest")
    write_sample_data(root / "data", tiny_config(0))
    config = PretrainConfig(**{**tiny_settings, "steps": 4}, score="pixel")
    pretrain([root / "data" / "unlabeled" / "volume.tif"], root / "ae", config, progress=False)
    labels = root / "data" / "labels.csv"
    finetune(root / "ae", labels, root / "clf", FinetuneConfig(**FAST), progress=False)
    return root


def test_suggest_writes_a_labels_csv_that_finetune_takes_once_filled(
    tmp_path, trained, monkeypatch
):
    import emae.commands.suggest as command

    volume = trained / "data" / "unlabeled" / "volume.tif"
    out = tmp_path / "to_label.csv"
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return select_batch(*args, **kwargs)

    monkeypatch.setattr(command, "select_batch", spy)
    result = suggest(trained / "clf", [volume], out, n=6, pool=40)
    # By class, from the classifier's own labels counted in its class order.
    training = json.loads((trained / "clf" / "training.json").read_text())
    classes = load_labels(trained / "data" / "labels.csv").classes
    expected = [training["class_counts"][k] for k in classes]
    assert calls[-1]["counts"].tolist() == expected
    assert calls[-1]["proba"].shape == (40, len(classes))
    suggest(trained / "clf", [volume], tmp_path / "plain.csv", n=6, pool=40, by_class=False)
    assert calls[-1]["proba"] is None and calls[-1]["counts"] is None
    assert result["suggested"] == 6 and result["by_class"] and result["avoided_labeled"] > 0
    assert not result["anomaly"]
    # The anomaly weight, on request, comes from the classifier's autoencoder.
    weighed = suggest(trained / "clf", [volume], tmp_path / "w.csv", n=6, pool=40, anomaly=True)
    assert weighed["anomaly"]
    with open(tmp_path / "w_scores.csv", newline="") as f:
        assert all(r["anomaly_rank"] != "" for r in csv.DictReader(f))
    assert (tmp_path / "to_label.png").stat().st_size > 0
    with open(tmp_path / "to_label_scores.csv", newline="") as f:
        scores = list(csv.DictReader(f))
    assert [int(r["rank"]) for r in scores] == list(range(1, 7))
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 and all(r["label"] == "" for r in rows)
    assert len({(r["z"], r["y"], r["x"]) for r in rows}) == 6
    # Fill in some of the rows (others left empty), then train on both files.
    original = load_labels(trained / "data" / "labels.csv")
    for i, row in enumerate(rows):
        row["label"] = original.classes[i % 2] if i < 4 else ""
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    both = load_label_files([trained / "data" / "labels.csv", out], patch_size=32)
    assert len(both.samples) == len(original.samples) + 4 and both.classes == original.classes
    summary = finetune(
        trained / "ae",
        [trained / "data" / "labels.csv", out],
        tmp_path / "clf2",
        FinetuneConfig(**FAST),
        progress=False,
    )
    assert sum(summary["class_counts"].values()) == len(original.samples) + 4
    # A label outside the classes is refused in one line naming it.
    rows[0]["label"] = "scrach"
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(EmaeError, match="unknown class 'scrach'; expected one of"):
        load_label_files([trained / "data" / "labels.csv", out])


def test_suggest_refuses_bad_requests(tmp_path, trained):
    volume = trained / "data" / "unlabeled" / "volume.tif"
    with pytest.raises(EmaeError, match="cannot suggest 50 patches from a pool of 10"):
        suggest(trained / "clf", [volume], tmp_path / "a.csv", n=50, pool=10)
    with pytest.raises(EmaeError, match=r"name it \*.csv"):
        suggest(trained / "clf", [volume], tmp_path / "a.txt")
    # The classifier's autoencoder is gone: one line, and how to go on without it.
    moved = tmp_path / "moved"
    shutil.copytree(trained / "clf", moved / "clf")
    shutil.copytree(trained / "ae", moved / "ae")
    summary = json.loads((moved / "clf" / "training.json").read_text())
    summary["encoder"] = str(tmp_path / "gone")
    (moved / "clf" / "training.json").write_text(json.dumps(summary))
    with pytest.raises(EmaeError, match=r"is gone.*leave out --anomaly"):
        suggest(moved / "clf", [volume], tmp_path / "b.csv", n=2, pool=10, anomaly=True)
    result = suggest(moved / "clf", [volume], tmp_path / "b.csv", n=2, pool=10, anomaly=False)
    assert not result["anomaly"]
    with pytest.raises(EmaeError, match="exists"):
        suggest(moved / "clf", [volume], tmp_path / "b.csv", n=2, pool=10, anomaly=False)
    # Its own earlier suggestions are replaced on request; a CSV it did not write never is.
    again = suggest(
        moved / "clf", [volume], tmp_path / "b.csv", n=3, pool=10, anomaly=False, overwrite=True
    )
    assert again["suggested"] == 3
    foreign = tmp_path / "mine.csv"
    foreign.write_text("image,x,y,label\nimg.tif,1,2,dust\n")
    with pytest.raises(EmaeError, match="not suggestions of emae suggest"):
        suggest(moved / "clf", [volume], foreign, n=2, pool=10, anomaly=False, overwrite=True)
    assert foreign.read_text() == "image,x,y,label\nimg.tif,1,2,dust\n"
    # Nor the classifier's own training labels.
    with pytest.raises(EmaeError, match=r"labels\.csv"):
        suggest(trained / "clf", [volume], trained / "data" / "labels.csv", n=2, pool=10,
                overwrite=True)  # fmt: skip


def test_cli_suggest(tmp_path, trained, capsys):
    volume = trained / "data" / "unlabeled" / "volume.tif"
    out = tmp_path / "next.csv"
    code = main(["suggest", str(trained / "clf"), str(volume), "--out", str(out), "--n", "3",
                 "--pool", "30"])  # fmt: skip
    assert code == 0 and "suggested 3 of 30 candidate patches" in capsys.readouterr().out
    # The rule before selection by class: uncertainty x anomaly rank x distance.
    assert main(["suggest", str(trained / "clf"), str(volume), "--out", str(out), "--n", "3",
                 "--pool", "30", "--no-by-class", "--anomaly", "--overwrite"]) == 0  # fmt: skip
    with open(tmp_path / "next_scores.csv", newline="") as f:
        assert all(r["anomaly_rank"] != "" for r in csv.DictReader(f))
    assert main(["suggest", str(trained / "clf"), str(volume), "--out", str(out), "--n", "40",
                 "--pool", "30", "--overwrite"]) == 1  # fmt: skip
    assert "cannot suggest 40 patches from a pool of 30" in capsys.readouterr().err
