"""``emae pipeline CONFIG --out OUT``: every step from pretraining to the HTML report.

Each step calls the same API function as its own command and writes one place in ``OUT``:

==========  ==========================================  =====================================
step        output                                      command it equals
==========  ==========================================  =====================================
split       ``labels/train.csv``, ``labels/test.csv``   (held-out groups of the labels CSV)
pretrain    ``autoencoder/``                            ``emae pretrain``
score       ``scores/test.tif``, ``test_scores.csv``    ``emae score``
finetune    ``classifier/``                             ``emae finetune``
evaluate    ``evaluation/``                             ``emae evaluate``
compare     ``compare/``                                ``emae compare``
detect      ``detect.zarr`` and its CSV / PNG files     ``emae detect``
pretrain-*  ``denoiser/``, ``inpainter/`` (optional)    ``emae pretrain --model ...``
denoise     ``denoised.zarr`` (optional)                ``emae denoise``
repair      ``repair/`` (optional)                      ``emae repair``
embed-*     ``embeddings/*.parquet`` (optional)         ``emae embed``
map         ``map/`` (optional)                         ``emae map``
map-*       ``map-labels/``, ``map-test/`` (optional)   ``emae map MAP --apply``
generate    ``generated/`` (optional)                   ``emae generate``
report      ``report.html``                             ``emae report``
==========  ==========================================  =====================================

``pipeline.json`` records the configuration, the exact command of every step, its time, the
package version and the seed. Rerunning the same command after an interruption skips the
finished steps and resumes the interrupted one (each step's own resume); a different
configuration needs ``overwrite``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emae import __version__
from emae.commands.pipeline_config import PipelineConfig
from emae.commands.pipeline_steps import command as _command
from emae.commands.pipeline_steps import compress_steps, latent_steps, restoration_steps
from emae.commands.pipeline_steps import write_yaml as _write_yaml
from emae.errors import EmaeError
from emae.io.atomic import atomic_file, check_writable
from emae.io.map_store import store_images

logger = logging.getLogger(__name__)

RECORD = "pipeline.json"


def is_pipeline(path: Path) -> bool:
    """Whether ``path`` is a folder written by :func:`run_pipeline`."""
    return (Path(path) / RECORD).is_file()


def split_labels(config: PipelineConfig, out: Path) -> tuple[Path, Path]:
    """Hold out whole groups of the labels CSV as the test set (stratified where possible).

    Of the group-aware folds (one per ``1 / test_share``), the first whose training part holds
    every class of its test part is used; with rare classes confined to one group, the fold
    that leaves the fewest test samples unseen, and those are dropped from the test set (a
    classifier cannot be scored on classes it never saw), with a warning naming them.

    Returns
    -------
    tuple of Path
        ``labels/train.csv`` and ``labels/test.csv`` in ``out``.
    """
    from emae.data.folds import holdout_groups
    from emae.data.labels import load_labels, write_labels

    labeled = load_labels(config.labels)
    groups = [s.group for s in labeled.samples]
    try:
        train, test = holdout_groups(
            labeled.label_indices(), groups, config.test_share, config.seed, labeled.classes
        )
    except EmaeError as exc:
        raise EmaeError(f"{config.labels}: {exc}; give test_labels instead") from None
    folder = out / "labels"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, part in (("train", train), ("test", test)):
        paths.append(
            write_labels(
                folder / f"{name}.csv",
                [labeled.samples[i] for i in sorted(part)],
                features=labeled.features,
                overwrite=True,
            )
        )
    return paths[0], paths[1]


class _Record:
    """``pipeline.json``: configuration, commands, timings; rewritten after every step."""

    def __init__(self, out: Path, config: PipelineConfig, extra: dict[str, Any]) -> None:
        self.path = out / RECORD
        self.data: dict[str, Any] = {
            "emae_version": __version__,
            "seed": config.seed,
            "config": config.model_dump(mode="json"),
            **extra,
            "steps": {},
        }
        if self.path.is_file():
            self.data["steps"] = json.loads(self.path.read_text()).get("steps", {})
        self.save()

    def save(self) -> None:
        with atomic_file(self.path, overwrite=True) as tmp:
            tmp.write_text(json.dumps(self.data, indent=2) + "\n")

    def step(self, name: str, command: str, outputs: dict[str, str], seconds: float) -> None:
        self.data["steps"][name] = {
            "command": command,
            "outputs": outputs,
            "seconds": round(seconds, 2),
        }
        self.save()


def _open_folder(out: Path, config: PipelineConfig, overwrite: bool, keep: tuple[str, ...]) -> None:
    """Create ``out``, continue the same pipeline there, or refuse to touch other data."""
    if out.is_dir() and not is_pipeline(out) and all(p.name in keep for p in out.iterdir()):
        return  # only the caller's own files: a fresh run
    if is_pipeline(out):
        saved = json.loads((out / RECORD).read_text()).get("config")
        if saved == config.model_dump(mode="json"):
            if overwrite:
                _clear(out, keep)
            else:
                logger.info("continuing the pipeline in %s (finished steps are skipped)", out)
            return
        if not overwrite:
            raise EmaeError(
                f"{out} holds a pipeline run with another configuration; pass --overwrite to "
                f"replace it or choose another folder"
            )
    check_writable(out, overwrite=overwrite, replaceable=is_pipeline, kind="an emae pipeline run")
    _clear(out, keep)


def _clear(out: Path, keep: tuple[str, ...]) -> None:
    """Empty (or create) ``out``, except the entries named in ``keep``."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    for entry in out.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def run_pipeline(
    config: PipelineConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
    keep: tuple[str, ...] = (),
    on_step: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Run every step of the pipeline into ``out`` (see the module docstring).

    Parameters
    ----------
    config
        The validated configuration (:func:`~emae.commands.pipeline_config.load_pipeline_config`).
    out
        The run folder; created, continued (same configuration) or, with ``overwrite``,
        replaced (only when it holds a pipeline run).
    overwrite
        Start again even when a run with the same or another configuration is there.
    progress
        Show progress bars of the steps.
    extra
        More entries for ``pipeline.json`` (e.g. the demo's data generation).
    keep
        Names of entries in ``out`` that belong to the caller (the demo's data): they do not
        make ``out`` count as existing data and are never removed.
    on_step
        Called with ``(step name, seconds)`` after each step that ran.

    Returns
    -------
    dict
        The content of ``pipeline.json``.
    """
    out = Path(out)
    _open_folder(out, config, overwrite, keep)
    record = _Record(out, config, extra or {})
    configs = out / "configs"
    pretrain_yaml = _write_yaml(configs / "pretrain.yaml", config.pretrain_config().model_dump())
    finetune_yaml = _write_yaml(configs / "finetune.yaml", config.finetune_config().model_dump())
    steps = config.compare_steps
    compare_yaml = _write_yaml(configs / "compare.yaml", config.finetune_config(steps).model_dump())

    def run(name: str, done: bool, command: str, outputs: dict[str, Path], fn: Callable) -> None:
        if done and name in record.data["steps"]:
            logger.info("step %s: already done", name)
            return
        logger.info("step %s: %s", name, command)
        began = time.perf_counter()
        fn()
        seconds = time.perf_counter() - began
        record.step(name, command, {k: str(v) for k, v in outputs.items()}, seconds)
        logger.info("step %s: done in %.1f s", name, seconds)
        if on_step is not None:
            on_step(name, seconds)

    from emae.commands.compare import compare
    from emae.commands.evaluate import evaluate
    from emae.commands.finetune import finetune
    from emae.commands.pretrain import pretrain
    from emae.commands.score import score_images, scores_path
    from emae.data.folds import parse_budgets

    train_csv, test_csv = out / "labels" / "train.csv", out / "labels" / "test.csv"
    if config.test_labels is not None:
        train_csv, test_csv = Path(config.labels), Path(config.test_labels)
    else:
        run(
            "split",
            test_csv.is_file(),
            f"hold out {config.test_share:g} of the groups of {config.labels}",
            {"train": train_csv, "test": test_csv},
            lambda: split_labels(config, out),
        )

    ae = out / "autoencoder"
    run(
        "pretrain",
        (ae / "training.json").is_file(),
        _command("emae", "pretrain", *config.unlabeled, "--out", ae, "--config", pretrain_yaml),
        {"model": ae},
        lambda: pretrain(
            config.unlabeled,
            ae,
            config.pretrain_config(),
            resume=Path(f"{ae}.training").is_dir(),
            progress=progress,
        ),
    )

    if config.test_images:
        score_map = out / "scores" / "test.tif"
        score_map.parent.mkdir(exist_ok=True)
        run(
            "score",
            scores_path(score_map).is_file(),
            _command("emae", "score", ae, *config.test_images, "--out", score_map),
            {"map": score_map, "scores": scores_path(score_map)},
            lambda: score_images(
                ae, config.test_images, score_map, overwrite=True, progress=progress
            ),
        )

    clf = out / "classifier"
    run(
        "finetune",
        (clf / "training.json").is_file(),
        _command(
            "emae", "finetune", ae, "--labels", train_csv, "--out", clf, "--config", finetune_yaml
        ),
        {"classifier": clf},
        lambda: finetune(
            ae,
            train_csv,
            clf,
            config.finetune_config(),
            resume=Path(f"{clf}.training").is_dir(),
            progress=progress,
        ),
    )

    evaluation = out / "evaluation"
    run(
        "evaluate",
        (evaluation / "metrics.json").is_file(),
        _command("emae", "evaluate", clf, "--labels", test_csv, "--out", evaluation),
        {"report": evaluation},
        lambda: evaluate(clf, test_csv, evaluation, overwrite=True),
    )

    if config.compare_methods:
        comparison = out / "compare"
        methods = ",".join(config.compare_methods)
        # head-semi trains on the pipeline's unlabeled images; the other methods never read them
        semi = config.unlabeled if "head-semi" in config.compare_methods else []
        run(
            "compare",
            (comparison / "summary.json").is_file(),
            _command(
                "emae",
                "compare",
                "--labels",
                config.labels,
                "--encoder",
                ae,
                "--methods",
                methods,
                "--folds",
                config.compare_folds,
                "--budgets",
                config.compare_budgets,
                "--config",
                compare_yaml,
                "--seed",
                config.seed,
                "--out",
                comparison,
                *(["--unlabeled", *semi] if semi else []),
            ),
            {"compare": comparison},
            lambda: compare(
                config.labels,
                comparison,
                encoder=ae,
                unlabeled=semi,
                methods=config.compare_methods,
                folds=config.compare_folds,
                budgets=parse_budgets(config.compare_budgets),
                config=config.finetune_config(steps),
                seed=config.seed,
                progress=progress,
            ),
        )

    if config.detect_input is not None:
        from emae.commands.detect import detect

        store = out / "detect.zarr"
        workers = config.detect_workers
        run(
            "detect",
            "anomaly" in store_images(store) and Path(f"{out}/detect_qc.csv").is_file(),
            _command(
                "emae",
                "detect",
                clf,
                config.detect_input,
                "--out",
                store,
                "--chunk",
                config.detect_chunk,
                *(("--tile", config.detect_tile) if config.detect_tile else ()),
                *(("--workers", workers) if workers else ()),
            ),
            {"store": store},
            lambda: detect(
                clf,
                config.detect_input,
                store,
                tile=config.detect_tile,
                chunk=config.detect_chunk,
                workers=workers,
                progress=progress,
            ),
        )

    if config.detect_input is not None:
        restoration_steps(config, out, ae, run, progress)
    if config.latent is not None:
        latent_steps(config, out, ae, run, progress)
    if config.compress is not None:
        compress_steps(config, out, run, progress)

    from emae.report import write_report

    html = out / "report.html"
    run(
        "report",
        False,
        _command("emae", "report", out, "--out", html),
        {"report": html},
        lambda: write_report([out], html, overwrite=True),
    )
    return record.data
