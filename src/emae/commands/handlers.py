"""What each ``emae`` subcommand does with its parsed flags: call the API, print the result.

:func:`emae.cli.build_parser` binds every subcommand to one function here; each turns the
``argparse.Namespace`` into keyword arguments of a library or command function and prints one
summary of what was written. No computation lives here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from emae.errors import EmaeError


def sample_data(args: argparse.Namespace) -> None:
    from emae.synth.sample_data import SampleDataConfig, tiny_config, write_sample_data

    config = tiny_config(args.seed) if args.tiny else SampleDataConfig(seed=args.seed)
    manifest = write_sample_data(args.dir, config, overwrite=args.overwrite)
    print(
        f"wrote {manifest['n_labels']} labels, an unlabeled volume of "
        f"{'x'.join(map(str, manifest['unlabeled_shape']))} and "
        f"{manifest['test_shape'][0]} test sections to {args.dir} (see {args.dir}/README.md)"
    )


def pixel_size(text: str | None) -> tuple[float, ...] | None:
    from emae.io.pixel_size import parse_pixel_size

    return parse_pixel_size(text)


def info(args: argparse.Namespace) -> None:
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


def labels(args: argparse.Namespace) -> None:
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


def pretrain(args: argparse.Namespace) -> None:
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
        score_steps=args.score_steps,
        tensorboard=args.tensorboard or None,
        rd_lambda=args.rd_lambda,
    )
    info = distributed.init_from_env()  # a process group when started by torchrun
    failed = True
    try:
        summary = pretrain(
            args.data,
            args.out,
            config,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.quiet and info.rank == 0,
        )
        failed = False
    finally:
        distributed.cleanup(failed=failed)
    if info.rank != 0:
        return
    best = summary["best_val"]
    steps, this_run = summary["steps_done"], summary.get("steps_this_run", summary["steps_done"])
    if "fitted_patches" in summary:
        how = (
            f"fitted in closed form on {summary['fitted_patches']} patches "
            f"({summary['seconds']:.0f} s)"
        )
    elif steps and not this_run:
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


def score(args: argparse.Namespace) -> None:
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
        pixel_size=pixel_size(args.pixel_size),
        truth=args.truth,
    )
    print(
        f"wrote the {result['axes']} anomaly map {result['map']} "
        f"({'x'.join(map(str, result['shape']))}, float32, larger = more anomalous) and "
        f"{result['scores']}; {result['anomalous_sections']} of {result['sections']} "
        f"section(s) above the model's threshold"
    )
    if "truth" in result:
        t = result["truth"]
        print(
            f"against {args.truth} ({100 * t['artifact_fraction']:.2f}% artifact in "
            f"{t['regions']} regions): pixel AUROC {t['auroc']:.3f}, average precision "
            f"{t['ap']:.3f}, AUPRO (to 30% FPR) {t['aupro']:.3f}"
        )


def finetune(args: argparse.Namespace) -> None:
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
        view=args.view,
        context=args.context,
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
        f"trained a {len(summary['class_counts'])}-class classifier ("
        + (f"{summary['view']} view" if summary["view"] != "image" else f"{config.freeze} encoder")
        + f", balance {config.balance}) on {counts} in {summary['seconds']:.0f} s; "
        f"classifier folder {args.out}"
    )


def suggest(args: argparse.Namespace) -> None:
    from emae.commands.suggest import suggest

    result = suggest(
        args.classifier,
        args.data,
        args.out,
        n=args.n,
        pool=args.pool,
        seed=args.seed,
        by_class=args.by_class,
        anomaly=args.anomaly,
        overwrite=args.overwrite,
    )
    counts = ", ".join(f"{k} {v}" for k, v in result["predicted"].items())
    print(
        f"suggested {result['suggested']} of {result['pool']} candidate patches (predicted: "
        f"{counts}) in {result['labels']}; fill in the label column and pass it to emae "
        f"finetune --labels; scores in {result['scores']}, montage {result['montage']}"
    )


def export(args: argparse.Namespace) -> None:
    from emae.commands.export import export_onnx

    options = {} if args.opset is None else {"opset": args.opset}
    result = export_onnx(args.model, args.out, overwrite=args.overwrite, **options)
    print(
        f"exported the {result['emae.model']} {result['emae.kind']} to {result['path']} (opset "
        f"{result['opset']}; onnxruntime matches emae within {result['max_abs_diff']:.1g})\n"
        f"  input:   {result['emae.input']}\n  outputs: {result['emae.outputs']}"
    )


def evaluate(args: argparse.Namespace) -> None:
    from emae.commands.evaluate import evaluate

    metrics = evaluate(
        args.classifier, args.labels, args.out, overwrite=args.overwrite, rescale=args.rescale
    )
    print(
        f"{sum(c['support'] for c in metrics['per_class'].values())} samples: macro-F1 "
        f"{metrics['macro_f1']:.3f}, balanced accuracy {metrics['balanced_accuracy']:.3f}, "
        f"accuracy {metrics['accuracy']:.3f}; report in {args.out}"
    )


def compare(args: argparse.Namespace) -> None:
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


def detect(args: argparse.Namespace) -> None:
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
        pixel_size=pixel_size(args.pixel_size),
        classes_only=args.classes_only,
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


def _restore_options(args: argparse.Namespace) -> dict:
    """The flags shared by ``emae denoise`` and ``emae inpaint``, as keyword arguments."""
    return {
        "dtype": args.dtype,
        "overlap": args.overlap,
        "chunk": args.chunk,
        "workers": args.workers,
        "scheduler": args.scheduler,
        "scale": args.scale,
        "precision": args.precision,
        "threads": args.threads,
        "device": args.device,
        "overwrite": args.overwrite,
        "progress": not args.quiet,
        "rescale": args.rescale,
        "pixel_size": pixel_size(args.pixel_size),
    }


def _print_restored(summary: dict, what: str) -> None:
    chunks, rate = summary["chunks"], summary["megapixels_per_s"]
    print(
        f"{chunks['done']} chunks done, {chunks['skipped']} skipped in {summary['seconds']:.1f} s"
        + (f" ({rate:.2f} MP/s)" if rate else "")
        + f"; {summary['replaced_pixels']:,} pixels {what}, {summary['clipped_pixels']:,} "
        f"clipped to the output dtype; wrote {summary['out']} and {summary['table']}"
    )


def compress(args: argparse.Namespace) -> None:
    from emae.commands.compress import compress

    summary = compress(
        args.model,
        args.input,
        args.out,
        chunk=args.chunk,
        workers=args.workers,
        scheduler=args.scheduler,
        scale=args.scale,
        threads=args.threads,
        device=args.device,
        overwrite=args.overwrite,
        progress=not args.quiet,
        rescale=args.rescale,
        pixel_size=pixel_size(args.pixel_size),
    )
    chunks, rate = summary["chunks"], summary["megapixels_per_s"]
    print(
        f"{chunks['done']} chunks coded, {chunks['skipped']} skipped in {summary['seconds']:.1f} s"
        + (f" ({rate:.2f} MP/s)" if rate else "")
        + f"; {summary['bits_per_pixel']:.3f} bits per pixel, compression ratio "
        f"{summary['compression_ratio']:.1f}; wrote {summary['out']}"
    )


def decompress(args: argparse.Namespace) -> None:
    from emae.commands.compress import decompress

    summary = decompress(
        args.container, args.out, region=args.region, model=args.model, overwrite=args.overwrite
    )
    shape, rate = " x ".join(map(str, summary["shape"])), summary["megapixels_per_s"]
    print(
        f"decoded {shape} pixels in {summary['seconds']:.1f} s"
        + (f" ({rate:.2f} MP/s)" if rate else "")
        + f"; wrote {summary['out']}"
    )


def denoise(args: argparse.Namespace) -> None:
    from emae.commands.denoise import denoise
    from emae.restore.noise import NoiseModel

    summary = denoise(
        args.model,
        args.input,
        args.out,
        noise=args.noise,
        window=args.window,
        **_restore_options(args),
    )
    if summary["noise"]:
        print(f"noise model: {NoiseModel(**summary['noise'])}")
    _print_restored(summary, "denoised")


def inpaint(args: argparse.Namespace) -> None:
    from emae.commands.inpaint import inpaint

    summary = inpaint(
        args.model,
        args.input,
        args.out,
        mask=args.mask,
        mask_threshold=args.mask_threshold,
        dilate=args.dilate,
        feather=args.feather,
        **_restore_options(args),
    )
    _print_restored(summary, "filled")


def repair(args: argparse.Namespace) -> None:
    from emae.commands.repair import repair

    summary = repair(
        args.detect_model,
        args.inpaint_model,
        args.input,
        args.out,
        margin=args.margin,
        threshold=args.threshold,
        feather=args.feather,
        tiff=args.tiff,
        chunk=args.chunk,
        overlap=args.overlap,
        workers=args.workers,
        scheduler=args.scheduler,
        scale=args.scale,
        device=args.device,
        precision=args.precision,
        overwrite=args.overwrite,
        progress=not args.quiet,
        rescale=args.rescale,
    )
    filled = summary["inpaint"]
    print(
        f"{summary['detect']['detections']} detections; {filled['replaced_pixels']:,} pixels "
        f"({filled['replaced_pixels'] / filled['pixels']:.2%}) replaced at anomaly > "
        f"{summary['threshold']:.4g} + {summary['margin']} pixels; wrote {filled['out']}, "
        f"{filled['table']} and {summary['panels']}"
    )


def print_steps(record: dict) -> None:
    steps = record["steps"]
    total = sum(s["seconds"] for s in steps.values())
    print(
        f"{len(steps)} steps in {total:.0f} s: "
        + ", ".join(f"{name} {s['seconds']:.0f} s" for name, s in steps.items())
    )


def pipeline(args: argparse.Namespace) -> None:
    from emae.commands.pipeline import run_pipeline
    from emae.commands.pipeline_config import load_pipeline_config

    config = load_pipeline_config(args.config, seed=args.seed)
    record = run_pipeline(config, args.out, overwrite=args.overwrite, progress=not args.quiet)
    print_steps(record)
    print(f"results in {args.out}; open {args.out / 'report.html'}")


def report(args: argparse.Namespace) -> None:
    from emae.report import write_report

    path = write_report(args.runs, args.out, title=args.title, overwrite=args.overwrite)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, self-contained)")


def demo(args: argparse.Namespace) -> None:
    from emae.commands.demo import run_demo

    record = run_demo(
        args.out,
        seed=args.seed,
        quick=args.quick,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print_steps(record)
    print(f"demo results in {Path(args.out).resolve()}; open {args.out / 'report.html'}")


def embed(args: argparse.Namespace) -> None:
    from emae.commands.embed import embed

    options = {
        "stride": args.stride,
        "sample": args.sample,
        "vector": args.vector,
        "input": args.input_variant,
        "anomaly": False if args.no_anomaly else None,
        "part_rows": args.part_rows,
        "batch_size": args.batch_size,
        "device": args.device,
        "precision": args.precision,
        "seed": args.seed,
    }
    summary = embed(
        args.model,
        args.inputs,
        args.out,
        labels=args.labels,
        detections=args.detections,
        overwrite=args.overwrite,
        progress=not args.quiet,
        workers=args.workers,
        scheduler=args.scheduler,
        threads=args.threads,
        **{k: v for k, v in options.items() if v is not None},
    )
    rate = summary["patches_per_s"]
    print(
        f"{summary['rows']:,} rows of {summary['dims']} values in {summary['out']} "
        f"({summary['parts']['done']} parts written, {summary['parts']['skipped']} already there"
        + (f"; {rate:,.0f} patches/s)" if rate else ")")
    )


def latent_map(args: argparse.Namespace) -> None:
    from emae.commands.latent_map import apply_map, fit_map, sections_text
    from emae.config import read_options

    if args.apply is not None:
        summary = apply_map(args.source, args.apply, args.out, overwrite=args.overwrite)
        print(
            f"placed {summary['rows']:,} rows in {args.source}: "
            f"{100 * summary['novel_share']:.1f}% outside every known cluster; wrote {args.out}"
        )
        for line in sections_text(summary["sections"][:3]):
            print(f"  {line}")
        return
    options = read_options(args.config) if args.config is not None else {}
    flags = {
        "n_neighbors": args.n_neighbors,
        "min_dist": args.min_dist,
        "clusterer": args.clusterer,
        "n_clusters": args.n_clusters,
        "min_cluster_size": args.min_cluster_size,
        "novelty_fpr": args.novelty_fpr,
        "max_fit": args.max_fit,
        "seed": args.seed,
    }
    options.update({k: v for k, v in flags.items() if v is not None})
    summary = fit_map(args.source, args.out, overwrite=args.overwrite, **options)
    print(
        f"{summary['rows']:,} rows in {summary['clusters']} clusters "
        f"({100 * summary['unclustered_share']:.1f}% in none), map fitted on "
        f"{summary['fitted_rows']:,}; wrote {summary['out']}"
    )


def _centre(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) not in (2, 3) or not all(p.strip().lstrip("-").isdigit() for p in parts):
        raise EmaeError(f"--at takes Z,Y,X (or Y,X) pixel centres, got {text!r}")
    values = [int(p) for p in parts]
    return (0, *values) if len(values) == 2 else tuple(values)  # type: ignore[return-value]


def generate(args: argparse.Namespace) -> None:
    from emae.commands.generate import generate

    at = None if args.at is None else [_centre(t) for t in args.at]
    summary = generate(
        args.model,
        args.out,
        inputs=args.inputs,
        samples=args.samples,
        pairs=args.pairs,
        steps=args.steps,
        units=args.units,
        span=args.span,
        at=at,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(f"wrote {', '.join(summary['made'])} to {args.out}")
