"""The ``emae`` command line: parse flags, call the API, print where results are.

Every command is a thin mirror of a Python function; no computation lives here. Problems with
the user's input arrive as :class:`~emae.errors.EmaeError` and are printed as one line
(``emae: error: ...``), never as a traceback. Exit statuses: 0 done; 1 the command failed (bad
input, configuration or option values, a file-system error); 2 the command line could not be
parsed (argparse's usage errors: unknown flags, missing arguments, a word where a number
belongs); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from emae import __version__
from emae.errors import EmaeError, config_error


def _sample_data(args: argparse.Namespace) -> None:
    from emae.synth.sample_data import SampleDataConfig, tiny_config, write_sample_data

    config = tiny_config(args.seed) if args.tiny else SampleDataConfig(seed=args.seed)
    manifest = write_sample_data(args.dir, config, overwrite=args.overwrite)
    print(
        f"wrote {manifest['n_labels']} labels, an unlabeled volume of "
        f"{'x'.join(map(str, manifest['unlabeled_shape']))} and "
        f"{manifest['test_shape'][0]} test sections to {args.dir} (see {args.dir}/README.md)"
    )


def _pixel_size(text: str | None) -> tuple[float, ...] | None:
    from emae.io.pixel_size import parse_pixel_size

    return parse_pixel_size(text)


def _info(args: argparse.Namespace) -> None:
    from emae.io import expand_inputs, open_image

    for source in expand_inputs(args.inputs):
        image = open_image(source, scale=args.scale)
        chunks = getattr(image.data, "chunks", None)
        size_mb = image.dtype.itemsize * int(np.prod(image.shape)) / 1e6
        print(
            f"{source}: axes={image.axes} shape={'x'.join(map(str, image.shape))} "
            f"dtype={image.dtype} pixel size={image.pixel_size_text()} "
            f"chunks={tuple(chunks) if chunks else None} ({size_mb:,.1f} MB)"
        )


def _labels(args: argparse.Namespace) -> None:
    from emae.data.labels import load_labels

    labeled = load_labels(args.csv, patch_size=args.patch_size)
    counts = labeled.class_counts()
    groups = {s.group for s in labeled.samples if s.group is not None}
    print(
        f"{args.csv}: {len(labeled.samples)} {labeled.kind} samples, {len(counts)} classes, "
        f"{len(groups)} groups, features: {', '.join(labeled.features) or 'none'}"
    )
    largest = max(counts.values())
    for name, n in counts.items():
        print(f"  {name:<20} {n:>6}  (1:{largest / max(n, 1):.1f} to the largest class)")


def _pretrain(args: argparse.Namespace) -> None:
    from emae.commands.pretrain import load_config, pretrain
    from emae.train import distributed

    config = load_config(
        args.config,
        model=args.model,
        steps=args.steps,
        patch_size=args.patch_size,
        latent_dim=args.latent_dim,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        num_workers=args.workers,
        score=args.score,
        tensorboard=args.tensorboard or None,
    )
    info = distributed.init_from_env()  # a process group when started by torchrun
    try:
        summary = pretrain(
            args.data,
            args.out,
            config,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.quiet and info.rank == 0,
        )
    finally:
        distributed.cleanup()
    if info.rank != 0:
        return
    best = summary["best_val"]
    steps, this_run = summary["steps_done"], summary.get("steps_this_run", summary["steps_done"])
    if steps and not this_run:
        how = f"all {steps} steps were done before the resume"
    else:
        since = f" since the resume at step {steps - this_run}" if this_run < steps else ""
        how = (
            f"trained for {steps} steps ({summary['samples_per_s']:.0f} patches/s{since} on "
            f"{summary['device']}, {summary['precision']}, {summary['seconds']:.0f} s)"
        )
    print(f"{config.model}: {how}; best validation loss {best:.4g}; model folder {args.out}")
    threshold = summary["threshold"]
    print(
        f"anomaly score {threshold['score']}: threshold {threshold['value']:.4g} flags "
        f"{100 * threshold['target_fpr']:g}% of {threshold['n_normal']} held-out patches"
    )


def _score(args: argparse.Namespace) -> None:
    from emae.commands.score import score_images

    result = score_images(
        args.model,
        args.inputs,
        args.out,
        overwrite=args.overwrite,
        device=args.device,
        batch_size=args.batch_size,
        scale=args.scale,
        tile=args.tile,
        overlap=args.overlap,
        precision=args.precision,
        progress=not args.quiet,
        rescale=args.rescale,
        pixel_size=_pixel_size(args.pixel_size),
    )
    print(
        f"wrote the {result['axes']} anomaly map {result['map']} "
        f"({'x'.join(map(str, result['shape']))}, float32, larger = more anomalous) and "
        f"{result['scores']}; {result['anomalous_sections']} of {result['sections']} "
        f"section(s) above the model's threshold"
    )


def _finetune(args: argparse.Namespace) -> None:
    from emae.commands.finetune import finetune, load_finetune_config

    freeze = None
    if args.unfreeze_after is not None:
        freeze = "unfreeze"
    elif args.freeze is not None:
        freeze = "frozen" if args.freeze else "finetune"
    config = load_finetune_config(
        args.config,
        freeze=freeze,
        unfreeze_after=args.unfreeze_after,
        balance=args.balance,
        input=args.input,
        orientation=args.orientation,
        tensorboard=args.tensorboard or None,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        rescale=args.rescale or None,
    )
    if args.model is None and not args.scratch:
        raise EmaeError("give the autoencoder folder to fine-tune, or --scratch")
    encoder = None if args.scratch else args.model
    summary = finetune(
        encoder,
        args.labels,
        args.out,
        config,
        unlabeled=args.unlabeled or (),
        overwrite=args.overwrite,
        resume=args.resume,
        progress=not args.quiet,
    )
    counts = ", ".join(f"{k} {v}" for k, v in summary["class_counts"].items())
    if summary["unlabeled_patches"]:
        counts += f" and {summary['unlabeled_patches']} unlabeled patches"
    print(
        f"trained a {len(summary['class_counts'])}-class classifier ({config.freeze} encoder, "
        f"balance {config.balance}) on {counts} in {summary['seconds']:.0f} s; "
        f"classifier folder {args.out}"
    )


def _export(args: argparse.Namespace) -> None:
    from emae.commands.export import export_onnx

    options = {} if args.opset is None else {"opset": args.opset}
    result = export_onnx(args.model, args.out, overwrite=args.overwrite, **options)
    print(
        f"exported the {result['emae.model']} {result['emae.kind']} to {result['path']} (opset "
        f"{result['opset']}; onnxruntime matches emae within {result['max_abs_diff']:.1g})\n"
        f"  input:   {result['emae.input']}\n  outputs: {result['emae.outputs']}"
    )


def _evaluate(args: argparse.Namespace) -> None:
    from emae.commands.evaluate import evaluate

    metrics = evaluate(
        args.classifier, args.labels, args.out, overwrite=args.overwrite, rescale=args.rescale
    )
    print(
        f"{sum(c['support'] for c in metrics['per_class'].values())} samples: macro-F1 "
        f"{metrics['macro_f1']:.3f}, balanced accuracy {metrics['balanced_accuracy']:.3f}, "
        f"accuracy {metrics['accuracy']:.3f}; report in {args.out}"
    )


def _compare(args: argparse.Namespace) -> None:
    from emae.commands.compare import compare
    from emae.commands.finetune import load_finetune_config
    from emae.data.folds import parse_budgets

    config = load_finetune_config(args.config, steps=args.steps)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    summary = compare(
        args.labels,
        args.out,
        encoder=args.encoder,
        unlabeled=args.unlabeled or (),
        methods=methods,
        folds=args.folds,
        budgets=parse_budgets(args.budgets),
        config=config,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(f"compared {', '.join(summary['methods'])}; results in {args.out}:")
    print((Path(args.out) / "table.md").read_text(), end="")


def _detect(args: argparse.Namespace) -> None:
    from emae.commands.detect import detect

    summary = detect(
        args.model,
        args.input,
        args.out,
        tile=args.tile,
        overlap=args.overlap,
        chunk=args.chunk,
        workers=args.workers,
        scheduler=args.scheduler,
        scale=args.scale,
        precision=args.precision,
        threads=args.threads,
        device=args.device,
        overwrite=args.overwrite,
        progress=not args.quiet,
        rescale=args.rescale,
        pixel_size=_pixel_size(args.pixel_size),
    )
    chunks = summary["chunks"]
    rate = summary["megapixels_per_s"]
    print(
        f"{chunks['done']} chunks done, {chunks['skipped']} skipped in {summary['seconds']:.1f} s"
        + (f" ({rate:.2f} MP/s)" if rate else "")
        + (f", {summary['startup_seconds']:.1f} s of it starting the cluster" if rate else "")
        + f"; {summary['detections']} detections; map {summary['map']}, "
        f"{summary['detections_csv']}, {summary['qc_csv']}, {summary['qc_png']}"
    )


def _print_steps(record: dict) -> None:
    steps = record["steps"]
    total = sum(s["seconds"] for s in steps.values())
    print(
        f"{len(steps)} steps in {total:.0f} s: "
        + ", ".join(f"{name} {s['seconds']:.0f} s" for name, s in steps.items())
    )


def _pipeline(args: argparse.Namespace) -> None:
    from emae.commands.pipeline import run_pipeline
    from emae.commands.pipeline_config import load_pipeline_config

    config = load_pipeline_config(args.config, seed=args.seed)
    record = run_pipeline(config, args.out, overwrite=args.overwrite, progress=not args.quiet)
    _print_steps(record)
    print(f"results in {args.out}; open {args.out / 'report.html'}")


def _report(args: argparse.Namespace) -> None:
    from emae.report import write_report

    path = write_report(args.runs, args.out, title=args.title, overwrite=args.overwrite)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, self-contained)")


def _demo(args: argparse.Namespace) -> None:
    from emae.commands.demo import run_demo

    record = run_demo(
        args.out,
        seed=args.seed,
        quick=args.quick,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    _print_steps(record)
    print(f"demo results in {Path(args.out).resolve()}; open {args.out / 'report.html'}")


#: What an interrupted command leaves, and how to continue it.
_RESUME = {
    "pretrain": "add --resume to the same command to continue from the last checkpoint",
    "finetune": "add --resume to the same command to continue from the last checkpoint",
    "detect": "rerun the same command to continue with the chunks not yet done",
    "compare": "rerun the same command to continue with the folds not yet done",
    "pipeline": "rerun the same command to continue with the steps not yet done",
}
_NOTHING = "nothing was written under the output's name; rerun the command"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default after its help, except where it says nothing: on/off flags
    (``--overwrite``, ``--no-freeze``) and None (the configuration or the data decides)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.nargs == 0 or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _logging_flags(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="Log emae's debug messages."
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="Log warnings only."
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``emae`` command, one sub-command per API entry point."""
    parser = argparse.ArgumentParser(
        prog="emae",
        description="Find artifacts and anomalies in EM images with autoencoders.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"emae {__version__}")
    _logging_flags(parser, default=False)
    # The same flags after the sub-command (`emae score ... -q`); their defaults are suppressed
    # so that a sub-command does not reset a flag given before it.
    logging_flags = argparse.ArgumentParser(add_help=False)
    _logging_flags(logging_flags, default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help,
            description=help,
            parents=[logging_flags],
            formatter_class=_HelpFormatter,
        )

    p = command("sample-data", help="Write a small synthetic EM dataset with labels.")
    p.add_argument("dir", type=Path, help="Destination folder (must not exist or be empty).")
    p.add_argument("--seed", type=int, default=0, help="Random seed.")
    p.add_argument("--tiny", action="store_true", help="A few-second dataset for quick tries.")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing folder.")
    p.set_defaults(func=_sample_data)

    p = command("info", help="Show axes, shape, dtype and chunks of images.")
    p.add_argument("inputs", nargs="+", help="Files, folders or globs.")
    p.add_argument("--scale", type=int, default=0, help="OME-Zarr / pyramid level.")
    p.set_defaults(func=_info)

    p = command("labels", help="Validate a labels CSV and show its class balance.")
    p.add_argument("csv", type=Path, help="The labels CSV.")
    p.add_argument("--patch-size", type=int, default=None, help="Check patches of this size fit.")
    p.set_defaults(func=_labels)

    p = command("pretrain", help="Train an autoencoder on unlabeled images.")
    p.add_argument("data", nargs="+", help="Files, folders or globs of unlabeled images.")
    p.add_argument("--out", type=Path, required=True, help="Model folder to create.")
    p.add_argument(
        "--model", help="conv-ae, denoising-ae, vae, beta-vae or pca (default: conv-ae)."
    )
    p.add_argument("--config", type=Path, help="YAML run configuration; flags override it.")
    p.add_argument("--steps", type=int, help="Optimizer steps (patches seen = steps x batch).")
    p.add_argument("--batch-size", type=int, help="Patches per step.")
    p.add_argument("--patch-size", type=int, help="Side of the square training patches.")
    p.add_argument("--latent-dim", type=int, help="Size of a vector latent.")
    p.add_argument("--seed", type=int, help="Random seed.")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps.")
    p.add_argument("--workers", type=int, help="DataLoader worker processes.")
    p.add_argument("--score", help="Anomaly score: pixel, ssim, feature, error-z or typicality.")
    p.add_argument("--tensorboard", action="store_true", help="Log to RUN/tensorboard.")
    p.add_argument("--resume", action="store_true", help="Continue an interrupted run.")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing model folder.")
    p.set_defaults(func=_pretrain)

    p = command("score", help="Write the anomaly map of images and their scores.")
    p.add_argument("model", type=Path, help="Model folder written by `emae pretrain`.")
    p.add_argument("inputs", nargs="+", help="Files, folders or globs of images.")
    p.add_argument("--out", type=Path, required=True, help="Map to write: .tif or .zarr.")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps.")
    p.add_argument("--batch-size", type=int, default=8, help="Tiles per forward pass.")
    p.add_argument("--tile", type=int, default=1024, help="Tile side in pixels.")
    p.add_argument("--overlap", type=int, default=64, help="Tile overlap in pixels.")
    p.add_argument("--scale", type=int, default=0, help="OME-Zarr / pyramid level.")
    p.add_argument("--precision", default="auto", help="auto (bf16 where native), bf16 or fp32.")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing map and CSV.")
    p.add_argument(
        "--rescale",
        action="store_true",
        help="Normalize the input by its own intensity percentiles instead of the model's "
        "(for data of another dtype or range than the training data, refused otherwise).",
    )
    p.add_argument(
        "--pixel-size",
        metavar="NM",
        help="Pixel size in nm where the input has none or it is wrong: 4 (Y and X), 4,4 or "
        "30,4,4 (Z,Y,X); units allowed (0.004um). Carried into the outputs.",
    )
    p.set_defaults(func=_score)

    p = command("finetune", help="Train encoder + classifier head on few labels.")
    p.add_argument("model", type=Path, nargs="?", help="Autoencoder folder (emae pretrain).")
    p.add_argument("--labels", type=Path, required=True, help="Labels CSV.")
    p.add_argument("--out", type=Path, required=True, help="Classifier folder to create.")
    p.add_argument("--config", type=Path, help="YAML run configuration; flags override it.")
    freeze = p.add_mutually_exclusive_group()
    freeze.add_argument(
        "--freeze",
        dest="freeze",
        action="store_true",
        default=None,
        help="Keep the encoder frozen (default).",
    )
    freeze.add_argument(
        "--no-freeze",
        dest="freeze",
        action="store_false",
        help="Fine-tune the encoder at a lower learning rate.",
    )
    freeze.add_argument("--unfreeze-after", type=int, help="Unfreeze the encoder after N steps.")
    freeze.add_argument(
        "--scratch",
        action="store_true",
        help="Ignore MODEL: train the same network from random weights.",
    )
    p.add_argument(
        "--balance", help="none, weights (default), oversample, undersample, artificial, smote."
    )
    p.add_argument(
        "--input", help="Whole-image labels: surrounding (default), cropped, masked or whole."
    )
    p.add_argument(
        "--unlabeled",
        nargs="+",
        help="Unlabeled images: train semi-supervised on patches of them (FixMatch).",
    )
    p.add_argument(
        "--orientation",
        help="any (default: flips and turns keep the class) or fixed (digits, letters).",
    )
    p.add_argument("--steps", type=int, help="Optimizer steps.")
    p.add_argument("--batch-size", type=int, help="Patches per step.")
    p.add_argument("--seed", type=int, help="Random seed.")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps.")
    p.add_argument("--tensorboard", action="store_true", help="Log to OUT/tensorboard.")
    p.add_argument("--resume", action="store_true", help="Continue an interrupted run.")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing folder.")
    p.add_argument(
        "--rescale",
        action="store_true",
        help="Normalize the input by its own intensity percentiles instead of the model's "
        "(for data of another dtype or range than the training data, refused otherwise).",
    )
    p.set_defaults(func=_finetune)

    p = command("export", help="Export a model folder as ONNX (deepImageJ, onnxruntime, ...).")
    p.add_argument("model", type=Path, help="Model folder (emae pretrain or emae finetune).")
    p.add_argument("--out", type=Path, required=True, help="The .onnx file to write.")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset, 13 to 20 (default: 17).")
    p.add_argument("--overwrite", action="store_true", help="Replace an .onnx file emae exported.")
    p.set_defaults(func=_export)

    p = command("evaluate", help="Score a classifier on a labeled test set.")
    p.add_argument("classifier", type=Path, help="Classifier folder (emae finetune).")
    p.add_argument("--labels", type=Path, required=True, help="Test labels CSV.")
    p.add_argument("--out", type=Path, required=True, help="Report folder to create.")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing report.")
    p.add_argument(
        "--rescale",
        action="store_true",
        help="Normalize the test patches by their own intensity percentiles instead of the "
        "classifier's (for data of another dtype or range, refused otherwise).",
    )
    p.set_defaults(func=_evaluate)

    p = command("compare", help="Cross-validate classifiers over label budgets.")
    p.add_argument("--labels", type=Path, required=True, help="Labels CSV.")
    p.add_argument(
        "--unlabeled",
        nargs="+",
        help="Unlabeled images: pretrain an encoder on them (without --encoder); head-semi "
        "trains on them.",
    )
    p.add_argument("--encoder", type=Path, help="A pretrained autoencoder folder.")
    p.add_argument(
        "--methods",
        default="head,cnn-scratch,svm-features,latent-logreg",
        help="Comma-separated: head, head-finetune, cnn-scratch, svm-features, "
        "latent-logreg, latent-knn.",
    )
    p.add_argument("--folds", type=int, default=5, help="Cross-validation folds.")
    p.add_argument("--budgets", default="5,10,25,50,all", help="Labels per class to try.")
    p.add_argument("--config", type=Path, help="YAML options of the neural methods (finetune).")
    p.add_argument("--steps", type=int, help="Optimizer steps of the neural methods.")
    p.add_argument("--seed", type=int, default=0, help="Random seed.")
    p.add_argument("--out", type=Path, required=True, help="Results folder (resumes if present).")
    p.add_argument("--overwrite", action="store_true", help="Discard a different comparison.")
    p.set_defaults(func=_compare)

    p = command("detect", help="Map a whole volume chunk by chunk (Dask, OME-Zarr).")
    p.add_argument("model", type=Path, help="Autoencoder folder (emae pretrain).")
    p.add_argument("input", help="Image or volume: TIFF, OME-Zarr, HDF5 (file.h5:/ds), folder.")
    p.add_argument("--out", type=Path, required=True, help="Output .zarr store.")
    p.add_argument("--chunk", type=int, default=1024, help="Output chunk side (one task each).")
    p.add_argument(
        "--tile", type=int, help="Tile side within a chunk (default: chunk + 2 x overlap)."
    )
    p.add_argument("--overlap", type=int, default=64, help="Tile overlap and chunk halo.")
    p.add_argument("--workers", type=int, help="Local Dask workers (default: cores, or GPUs).")
    p.add_argument(
        "--scheduler", help="Existing Dask scheduler address, or 'synchronous' (no cluster)."
    )
    p.add_argument("--scale", type=int, default=0, help="OME-Zarr / pyramid level.")
    p.add_argument("--precision", default="auto", help="auto (bf16 where native), bf16 or fp32.")
    p.add_argument(
        "--threads", type=int, help="Torch threads per worker (default: cores / workers)."
    )
    p.add_argument("--device", default="auto", help="auto (a GPU if any), cpu, cuda or cuda:N.")
    p.add_argument("--overwrite", action="store_true", help="Replace a different output.")
    p.add_argument(
        "--rescale",
        action="store_true",
        help="Normalize the input by its own intensity percentiles instead of the model's "
        "(for data of another dtype or range than the training data, refused otherwise).",
    )
    p.add_argument(
        "--pixel-size",
        metavar="NM",
        help="Pixel size in nm where the input has none or it is wrong: 4 (Y and X), 4,4 or "
        "30,4,4 (Z,Y,X); units allowed (0.004um). Carried into the outputs.",
    )
    p.set_defaults(func=_detect)

    p = command(
        "pipeline", help="Pretrain, score, fine-tune, evaluate, compare, detect and report."
    )
    p.add_argument("config", type=Path, help="Pipeline YAML (see configs/demo.yaml).")
    p.add_argument("--out", type=Path, required=True, help="Run folder (continues if present).")
    p.add_argument("--seed", type=int, help="Random seed (overrides the file's).")
    p.add_argument("--overwrite", action="store_true", help="Start again; replaces a run.")
    p.set_defaults(func=_pipeline)

    p = command("report", help="Write one self-contained HTML report of runs.")
    p.add_argument("runs", nargs="+", type=Path, help="Pipeline, model, evaluation, ... folders.")
    p.add_argument("--out", type=Path, required=True, help="The .html file to write.")
    p.add_argument("--title", default="emae report", help="Page title.")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing report.")
    p.set_defaults(func=_report)

    p = command("demo", help="Run the whole pipeline on the embedded sample data.")
    p.add_argument("--out", type=Path, default=Path("emae-demo"), help="Results folder.")
    p.add_argument("--seed", type=int, default=0, help="Random seed.")
    p.add_argument("--quick", action="store_true", help="Tiny data and fewer steps (< 3 min).")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing results folder.")
    p.set_defaults(func=_demo)
    return parser


def _configure_logging(verbose: bool, quiet: bool) -> None:
    """INFO (WARNING with ``-q``) for every logger; ``-v`` adds DEBUG for emae's own loggers
    only, so that zarr, numcodecs, asyncio, fsspec, PIL, matplotlib, ... stay quiet."""
    level = logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("emae").setLevel(logging.DEBUG if verbose else logging.NOTSET)
    if not verbose:  # the Dask cluster's own bookkeeping (workers too); warnings still show
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


def _output(args: argparse.Namespace) -> Path | None:
    """The file or folder the command writes (``--out``, or sample-data's ``DIR``), if any."""
    out = getattr(args, "out", None) or getattr(args, "dir", None)
    return None if out is None else Path(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``emae`` command; returns the exit status (see the module docstring).

    Usage errors exit with status 2 from argparse itself (``SystemExit``), before anything is
    created. Then the output's missing parent folders are created (never removed, even when the
    command fails) and the command runs.
    """
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    try:
        out = _output(args)
        if out is not None:  # `--out runs/ae` works without a `runs/` folder
            out.parent.mkdir(parents=True, exist_ok=True)
        args.func(args)
    except ValidationError as exc:
        print(f"emae: error: {config_error(exc, 'options')}", file=sys.stderr)
        return 1
    except EmaeError as exc:
        print(f"emae: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the file system said no: disk full, permission denied, ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"emae: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"emae: interrupted; {_RESUME.get(args.command, _NOTHING)}", file=sys.stderr)
        return 130
    return 0
