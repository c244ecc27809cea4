"""The optional steps of ``emae pipeline``: restoration, the latent space and compression.

Each function adds its steps through the pipeline's ``run(name, done, command, outputs, fn)``,
so they are recorded, skipped when finished and resumed like the others
(:mod:`emae.commands.pipeline`).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from emae.commands.pipeline_config import PipelineConfig
from emae.io.atomic import atomic_file
from emae.train.config import PretrainConfig


def command(*parts: Any) -> str:
    """The shell command a step equals, as recorded in ``pipeline.json``."""
    return shlex.join(str(p) for p in parts if p is not None)


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    """Write the options of a step as YAML (``OUT/configs/NAME.yaml``), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def restoration_steps(
    config: PipelineConfig, out: Path, ae: Path, run: Callable, progress: bool
) -> None:
    """The denoiser and the inpainter, each pretrained, then applied to ``detect_input``."""
    from emae.commands.denoise import denoise
    from emae.commands.repair import repair

    source = config.detect_input
    for name, options in (("denoiser", config.denoise), ("inpainter", config.inpaint)):
        if options is None:
            continue
        folder = out / name
        pretrain_step(run, config.unlabeled, out, name, folder, options, progress)
    if config.denoise is not None:
        store = out / "denoised.zarr"
        run(
            "denoise",
            Path(f"{store}.sections.csv").is_file(),
            command(
                "emae",
                "denoise",
                out / "denoiser",
                source,
                "--out",
                store,
                "--noise",
                config.denoise_noise,
            ),
            {"denoised": store},
            lambda: denoise(
                out / "denoiser", source, store, noise=config.denoise_noise, progress=progress
            ),
        )
    if config.inpaint is not None:
        folder = out / "repair"
        margin = config.repair_margin
        run(
            "repair",
            (folder / "repair.json").is_file(),
            command(
                "emae",
                "repair",
                ae,
                out / "inpainter",
                source,
                "--out",
                folder,
                "--margin",
                margin,
                "--chunk",
                config.detect_chunk,
            ),
            {"repair": folder},
            lambda: repair(
                ae,
                out / "inpainter",
                source,
                folder,
                margin=margin,
                chunk=config.detect_chunk,
                workers=config.detect_workers,
                progress=progress,
            ),
        )


def latent_steps(
    config: PipelineConfig, out: Path, ae: Path, run: Callable, progress: bool
) -> None:
    """Embed a sample of the unlabeled images and fit the map; place the labeled patches and
    the test images in it; generate with a vae (pretrained here) or the autoencoder."""
    from emae.commands.embed import embed
    from emae.commands.generate import generate
    from emae.commands.latent_map import apply_map, fit_map

    settings = config.latent
    assert settings is not None
    folder = out / "embeddings"
    folder.mkdir(exist_ok=True)
    options = settings.embed.model_dump()
    fit_options = {**options, "sample": settings.sample, "stride": None}
    sources = {
        "unlabeled": (config.unlabeled, None, fit_options),
        "labels": ([], config.labels, {**options, "sample": None, "stride": None}),
        "test": (config.test_images, None, {**options, "sample": None}),
    }
    for name, (inputs, labels, opts) in sources.items():
        if name == "test" and not inputs:
            continue
        target = folder / f"{name}.parquet"
        flags = ("--sample", settings.sample) if name == "unlabeled" else ()
        run(
            f"embed-{name}",
            (target / "_emae_done.json").is_file(),
            command("emae", "embed", ae, *inputs, *(("--labels", labels) if labels else ()),
                     "--out", target, *flags),
            {"embedding": target},
            lambda inputs=inputs, labels=labels, target=target, opts=opts: embed(
                ae, inputs, target, labels=labels, overwrite=True, progress=progress, **opts
            ),
        )  # fmt: skip
    map_folder = out / "map"
    run(
        "map",
        (map_folder / "points.parquet").is_file(),
        command("emae", "map", folder / "unlabeled.parquet", "--out", map_folder),
        {"map": map_folder},
        lambda: fit_map(
            folder / "unlabeled.parquet", map_folder, config=settings.map, overwrite=True
        ),
    )
    for name in ("labels", "test"):
        emb, target = folder / f"{name}.parquet", out / f"map-{name}"
        if not emb.is_dir():
            continue
        run(
            f"map-{name}",
            (target / "apply.json").is_file(),
            command("emae", "map", map_folder, "--apply", emb, "--out", target),
            {"applied": target},
            lambda emb=emb, target=target: apply_map(map_folder, emb, target, overwrite=True),
        )
    model = ae
    if settings.generator is not None:
        model = out / "generator"
        pretrain_step(run, config.unlabeled, out, "generator", model, settings.generator, progress)
    target = out / "generated"
    run(
        "generate",
        (target / "generate.json").is_file(),
        command("emae", "generate", model, *config.unlabeled, "--out", target),
        {"generated": target},
        lambda: generate(model, target, inputs=config.unlabeled, seed=config.seed, overwrite=True),
    )


def pretrain_step(
    run: Callable,
    inputs: list[str],
    out: Path,
    name: str,
    folder: Path,
    options: PretrainConfig,
    progress: bool,
) -> None:
    """Step ``pretrain-NAME``: ``emae pretrain`` of ``inputs`` into ``folder`` with ``options``
    (also written to ``OUT/configs/NAME.yaml``), continuing an interrupted training."""
    from emae.commands.pretrain import pretrain

    yaml_file = write_yaml(out / "configs" / f"{name}.yaml", options.model_dump(mode="json"))
    run(
        f"pretrain-{name}",
        (folder / "training.json").is_file(),
        command("emae", "pretrain", *inputs, "--out", folder, "--config", yaml_file),
        {"model": folder},
        lambda: pretrain(
            inputs,
            folder,
            options,
            resume=Path(f"{folder}.training").is_dir(),
            progress=progress,
        ),
    )


def compress_steps(config: PipelineConfig, out: Path, run: Callable, progress: bool) -> None:
    """One codec per quality level, pretrained on the unlabeled images; each compresses
    ``detect_input`` into ``OUT/compressed/codec-LAMBDA.zarr`` and decompresses it beside."""
    from emae.commands.compress import SUMMARY, compress, decompress

    settings = config.compress
    assert settings is not None and config.detect_input is not None
    source = config.detect_input
    (out / "codecs").mkdir(exist_ok=True)
    (out / "compressed").mkdir(exist_ok=True)
    for lmbda in settings.lambdas:
        name = f"codec-{lmbda:g}"
        folder, store = out / "codecs" / name, out / "compressed" / f"{name}.zarr"
        decoded = store.with_suffix(".tif")
        options = settings.codec.model_copy(update={"rd_lambda": lmbda, "seed": config.seed})
        pretrain_step(run, config.unlabeled, out, name, folder, options, progress)
        run(
            f"compress-{name}",
            (store / SUMMARY).is_file(),
            command("emae", "compress", folder, source, "--out", store, "--chunk", settings.chunk),
            {"container": store},
            lambda folder=folder, store=store: compress(
                folder, source, store, chunk=settings.chunk, progress=progress
            ),
        )
        run(
            f"decompress-{name}",
            decoded.is_file(),
            command("emae", "decompress", store, "--out", decoded),
            {"decoded": decoded},
            lambda store=store, decoded=decoded: decompress(store, decoded, overwrite=True),
        )
