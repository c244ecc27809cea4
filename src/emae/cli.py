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

from pydantic import ValidationError

from emae import __version__
from emae.commands import handlers
from emae.errors import EmaeError, config_error

#: What an interrupted command leaves, and how to continue it.
_RESUME = {
    "pretrain": "add --resume to the same command to continue from the last checkpoint",
    "finetune": "add --resume to the same command to continue from the last checkpoint",
    "detect": "rerun the same command to continue with the chunks not yet done",
    "denoise": "rerun the same command to continue with the chunks not yet done",
    "inpaint": "rerun the same command to continue with the chunks not yet done",
    "repair": "rerun the same command to continue with the chunks not yet done",
    "embed": "rerun the same command to continue with the parts not yet written",
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


def _input_flags(p: argparse.ArgumentParser) -> None:
    """The flags of commands that map images: intensity rescaling and the pixel size."""
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


def _restore_flags(p: argparse.ArgumentParser) -> None:
    """The output and chunking flags of the restoration commands (as ``emae detect``'s)."""
    p.add_argument("--out", type=Path, required=True, help="Output: .zarr, .tif or .tiff.")
    p.add_argument("--dtype", help="Output dtype (default: the input's), e.g. float32.")
    p.add_argument(
        "--chunk", type=int, default=1024, help="Output chunk side (one task, one tile each)."
    )
    p.add_argument("--overlap", type=int, default=64, help="Halo read around each chunk.")
    p.add_argument("--workers", type=int, help="Local Dask workers (default: cores, or GPUs).")
    p.add_argument(
        "--scheduler", help="Existing Dask scheduler address, or 'synchronous' (no cluster)."
    )
    p.add_argument("--scale", type=int, default=0, help="OME-Zarr / pyramid level.")
    p.add_argument("--precision", default="fp32", help="fp32, bf16 or auto.")
    p.add_argument(
        "--threads", type=int, help="Torch threads per worker (default: cores / workers)."
    )
    p.add_argument("--device", default="auto", help="auto (a GPU if any), cpu, cuda or cuda:N.")
    p.add_argument("--overwrite", action="store_true", help="Replace a different output.")
    _input_flags(p)


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
    p.set_defaults(func=handlers.sample_data)

    p = command("info", help="Show axes, shape, dtype and chunks of images.")
    p.add_argument("inputs", nargs="+", help="Files, folders or globs.")
    p.add_argument("--scale", type=int, default=0, help="OME-Zarr / pyramid level.")
    p.set_defaults(func=handlers.info)

    p = command("labels", help="Validate a labels CSV and show its class balance.")
    p.add_argument("csv", type=Path, help="The labels CSV.")
    p.add_argument("--patch-size", type=int, default=None, help="Check patches of this size fit.")
    p.set_defaults(func=handlers.labels)

    p = command("pretrain", help="Train an autoencoder on unlabeled images.")
    p.add_argument("data", nargs="+", help="Files, folders or globs of unlabeled images.")
    p.add_argument("--out", type=Path, required=True, help="Model folder to create.")
    p.add_argument(
        "--model",
        help="conv-ae, denoising-ae, blind-spot, inpainting-ae, vae, beta-vae, codec, "
        "codec-hyperprior or pca (default: conv-ae).",
    )
    p.add_argument(
        "--rd-lambda",
        type=float,
        help="codec: distortion weight in R + lambda * 255^2 * MSE (quality; default 0.01).",
    )
    p.add_argument("--config", type=Path, help="YAML run configuration; flags override it.")
    p.add_argument("--steps", type=int, help="Optimizer steps (patches seen = steps x batch).")
    p.add_argument("--batch-size", type=int, help="Patches per step.")
    p.add_argument("--patch-size", type=int, help="Side of the square training patches.")
    p.add_argument("--latent-dim", type=int, help="Size of a vector latent.")
    p.add_argument("--seed", type=int, help="Random seed.")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps.")
    p.add_argument("--workers", type=int, help="DataLoader worker processes.")
    p.add_argument(
        "--score",
        help="Anomaly score: pixel, ssim, feature, error-z, typicality or discriminative.",
    )
    p.add_argument(
        "--score-steps", type=int, help="discriminative: training steps of its segmenter."
    )
    p.add_argument("--tensorboard", action="store_true", help="Log to RUN/tensorboard.")
    p.add_argument("--resume", action="store_true", help="Continue an interrupted run.")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing model folder.")
    p.set_defaults(func=handlers.pretrain)

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
        "--truth", type=Path, help="Artifact masks of the map's shape: print AUROC, AP, AUPRO."
    )
    _input_flags(p)
    p.set_defaults(func=handlers.score)

    p = command("finetune", help="Train encoder + classifier head on few labels.")
    p.add_argument("model", type=Path, nargs="?", help="Autoencoder folder (emae pretrain).")
    p.add_argument(
        "--labels",
        type=Path,
        nargs="+",
        required=True,
        help="Labels CSV; more CSVs (e.g. filled emae suggest files) add samples.",
    )
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
        "--view",
        help="image (default); residual: a CNN trained on what MODEL could not reconstruct; "
        "both: on the patch and that residual.",
    )
    p.add_argument(
        "--context", type=int, help="View residual: pixels of surroundings MODEL sees (16)."
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
    p.set_defaults(func=handlers.finetune)

    p = command("suggest", help="Propose the next patches to label (active learning).")
    p.add_argument("classifier", type=Path, help="Classifier folder (emae finetune).")
    p.add_argument("data", nargs="+", help="Unlabeled images, folders or globs.")
    p.add_argument("--out", type=Path, required=True, help="Labels CSV to write (to fill in).")
    p.add_argument("--n", type=int, default=50, help="Patches to suggest (50).")
    p.add_argument("--pool", type=int, default=5000, help="Random candidates (5000).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the candidates' positions.")
    p.add_argument(
        "--by-class",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Choose each patch for the class labeled least so far (default: on).",
    )
    p.add_argument(
        "--anomaly",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="Weigh by the anomaly score of the classifier's autoencoder (default: off).",
    )
    p.add_argument("--overwrite", action="store_true", help="Replace earlier suggestion files.")
    p.set_defaults(func=handlers.suggest)

    p = command("export", help="Export a model folder as ONNX (deepImageJ, onnxruntime, ...).")
    p.add_argument("model", type=Path, help="Model folder (emae pretrain or emae finetune).")
    p.add_argument("--out", type=Path, required=True, help="The .onnx file to write.")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset, 13 to 20 (default: 17).")
    p.add_argument("--overwrite", action="store_true", help="Replace an .onnx file emae exported.")
    p.set_defaults(func=handlers.export)

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
    p.set_defaults(func=handlers.evaluate)

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
        default="cnn-residual,head,cnn-scratch,svm-features,latent-logreg",
        help="Comma-separated: cnn-residual, cnn-both, head, head-finetune, head-semi, "
        "cnn-scratch, svm-features, latent-logreg, latent-knn.",
    )
    p.add_argument("--folds", type=int, default=5, help="Cross-validation folds.")
    p.add_argument("--budgets", default="5,10,25,50,all", help="Labels per class to try.")
    p.add_argument("--config", type=Path, help="YAML options of the neural methods (finetune).")
    p.add_argument("--steps", type=int, help="Optimizer steps of the neural methods.")
    p.add_argument("--seed", type=int, default=0, help="Random seed.")
    p.add_argument("--out", type=Path, required=True, help="Results folder (resumes if present).")
    p.add_argument("--overwrite", action="store_true", help="Discard a different comparison.")
    p.set_defaults(func=handlers.compare)

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
    _input_flags(p)
    p.add_argument(
        "--classes-only",
        action="store_true",
        help="Classifier runs: map the classes without the autoencoder's anomaly map.",
    )
    p.set_defaults(func=handlers.detect)

    p = command("denoise", help="Denoise an image or volume chunk by chunk (Dask).")
    p.add_argument("model", type=Path, help="Model folder (pretrain --model blind-spot).")
    p.add_argument("input", help="Image or volume: TIFF, OME-Zarr, HDF5 (file.h5:/ds), folder.")
    _restore_flags(p)
    p.add_argument(
        "--noise",
        default="auto",
        help="Combine a blind-spot prediction with the noisy pixel by a noise model: auto "
        "(fit for blind-spot models where it can, off otherwise), fit (Poisson-Gaussian, fitted "
        "on the input), A,B[,FLOOR] (variance A * intensity + B, at least FLOOR) or off.",
    )
    p.add_argument(
        "--window", type=float, default=4.0, help="Pixels (sigma) of the prior's local variance."
    )  # emae.restore.noise.WINDOW
    p.set_defaults(func=handlers.denoise)

    p = command("inpaint", help="Fill the masked pixels of an image or volume (Dask).")
    p.add_argument("model", type=Path, help="Model folder (pretrain --model inpainting-ae).")
    p.add_argument("input", help="Image or volume: TIFF, OME-Zarr, HDF5 (file.h5:/ds), folder.")
    p.add_argument(
        "--mask", required=True, help="Image of the input's shape; holes where > threshold."
    )
    p.add_argument("--mask-threshold", type=float, default=0.0, help="Holes: mask > this.")
    p.add_argument("--dilate", type=int, default=0, help="Grow the holes by this many pixels.")
    p.add_argument("--feather", type=int, default=3, help="Blend over this many pixels.")
    _restore_flags(p)
    p.set_defaults(func=handlers.inpaint)

    p = command("compress", help="Compress an image or volume with a trained codec (Dask).")
    p.add_argument("model", type=Path, help="Model folder (pretrain --model codec).")
    p.add_argument("input", help="Image or volume: TIFF, OME-Zarr, HDF5 (file.h5:/ds), folder.")
    p.add_argument("--out", type=Path, required=True, help="Container to write: OUT.zarr.")
    p.add_argument("--chunk", type=int, default=512, help="Side of the chunks coded on their own.")
    p.add_argument("--workers", type=int, help="Local Dask workers (default: cores, or GPUs).")
    p.add_argument(
        "--scheduler", help="Existing Dask scheduler address, or 'synchronous' (no cluster)."
    )
    p.add_argument("--scale", type=int, default=0, help="OME-Zarr / pyramid level.")
    p.add_argument(
        "--threads", type=int, help="Torch threads per worker (default: cores / workers)."
    )
    p.add_argument("--device", default="auto", help="auto (a GPU if any), cpu, cuda or cuda:N.")
    p.add_argument("--overwrite", action="store_true", help="Replace a different container.")
    _input_flags(p)
    p.set_defaults(func=handlers.compress)

    p = command("decompress", help="Decode a compressed container, whole or a region.")
    p.add_argument("container", type=Path, help="Container written by emae compress.")
    p.add_argument("--out", type=Path, required=True, help="Image to write: .tif, .tiff, .zarr.")
    p.add_argument("--region", help="z0:z1,y0:y1,x0:x1 (y0:y1,x0:x1 for an image).")
    p.add_argument("--model", type=Path, help="The codec's folder, if it has moved.")
    p.add_argument("--overwrite", action="store_true", help="Replace an earlier decoded image.")
    p.set_defaults(func=handlers.decompress)

    p = command("repair", help="Detect artifacts and fill them with an inpainting model.")
    p.add_argument("detect_model", type=Path, help="Autoencoder folder (emae pretrain).")
    p.add_argument("inpaint_model", type=Path, help="Model folder (--model inpainting-ae).")
    p.add_argument("input", help="Image or volume: TIFF, OME-Zarr, HDF5 (file.h5:/ds), folder.")
    p.add_argument("--out", type=Path, required=True, help="Run folder (continues if present).")
    p.add_argument("--margin", type=int, default=8, help="Grow the holes by this many pixels.")
    p.add_argument(
        "--threshold", type=float, help="Anomaly of a hole (default: the model's threshold)."
    )
    p.add_argument("--feather", type=int, default=3, help="Blend over this many pixels.")
    p.add_argument("--tiff", action="store_true", help="Write repaired.tif, not repaired.zarr.")
    p.add_argument("--chunk", type=int, default=1024, help="Output chunk side (one task each).")
    p.add_argument("--overlap", type=int, default=64, help="Halo read around each chunk.")
    p.add_argument("--workers", type=int, help="Local Dask workers (default: cores, or GPUs).")
    p.add_argument(
        "--scheduler", help="Existing Dask scheduler address, or 'synchronous' (no cluster)."
    )
    p.add_argument("--scale", type=int, default=0, help="OME-Zarr / pyramid level.")
    p.add_argument("--precision", default="auto", help="Of the detection: auto, bf16 or fp32.")
    p.add_argument("--device", default="auto", help="auto (a GPU if any), cpu, cuda or cuda:N.")
    p.add_argument("--overwrite", action="store_true", help="Replace different outputs.")
    p.add_argument(
        "--rescale",
        action="store_true",
        help="Normalize the input by its own intensity percentiles instead of the models'.",
    )
    p.set_defaults(func=handlers.repair)

    p = command("embed", help="Vectors of patches as a Parquet table (for emae map).")
    p.add_argument("model", type=Path, help="Model folder (emae pretrain).")
    p.add_argument("inputs", nargs="*", help="Images or volumes (globs); none with --labels.")
    p.add_argument("--out", type=Path, required=True, help="Embedding folder, e.g. EMB.parquet.")
    p.add_argument("--labels", type=Path, help="Labels CSV: one row per sample, with labels.")
    p.add_argument("--detections", type=Path, help="OUT_detections.csv of emae detect (one input).")
    p.add_argument("--stride", type=int, help="Grid step in pixels (default: the patch size).")
    p.add_argument("--sample", type=int, help="N random patches instead of the grid.")
    p.add_argument(
        "--vector", choices=("levels", "latent", "code", "residual"), help="What describes a patch."
    )
    p.add_argument(
        "--input", dest="input_variant", help="Whole-image labels: surrounding, cropped, ..."
    )
    p.add_argument("--no-anomaly", action="store_true", help="Skip the anomaly score column.")
    p.add_argument("--part-rows", type=int, help="Rows per Parquet part (resume unit).")
    p.add_argument("--batch-size", type=int, help="Patches per forward pass.")
    p.add_argument("--device", help="cpu (default), cuda or cuda:N.")
    p.add_argument("--seed", type=int, help="Seed of --sample.")
    p.add_argument("--precision", help="auto (default: bf16 where native), fp32 or bf16.")
    p.add_argument("--workers", type=int, help="Local Dask workers (default: this process).")
    p.add_argument("--scheduler", help="Existing Dask scheduler address (parts run there).")
    p.add_argument(
        "--threads", type=int, help="Torch threads per worker (default: cores / workers)."
    )
    p.add_argument("--overwrite", action="store_true", help="Replace another embedding.")
    p.set_defaults(func=handlers.embed)

    p = command("map", help="UMAP map, clusters and novelty of an embedding (or apply a map).")
    p.add_argument("source", type=Path, help="An embedding, or with --apply a map folder.")
    p.add_argument("--apply", type=Path, metavar="EMB", help="Place this embedding in the map.")
    p.add_argument("--out", type=Path, required=True, help="Map folder (or --apply's output).")
    p.add_argument("--config", type=Path, help="YAML of the map's options (MapConfig).")
    p.add_argument("--n-neighbors", type=int, help="UMAP neighbours (default 15).")
    p.add_argument("--min-dist", type=float, help="UMAP min_dist (default 0).")
    p.add_argument("--clusterer", choices=("hdbscan", "kmeans"), help="Default hdbscan.")
    p.add_argument("--n-clusters", type=int, help="Clusters of k-means (default 8).")
    p.add_argument("--min-cluster-size", type=int, help="Smallest HDBSCAN cluster.")
    p.add_argument("--novelty-fpr", type=float, help="Share of fitted rows flagged (0.05).")
    p.add_argument("--max-fit", type=int, help="Rows fitted (a sample); the rest are placed.")
    p.add_argument("--seed", type=int, help="Seed of UMAP, k-means and the sample.")
    p.add_argument("--overwrite", action="store_true", help="Replace an earlier output.")
    p.set_defaults(func=handlers.latent_map)

    p = command("generate", help="Prior samples, interpolations and latent traversals.")
    p.add_argument("model", type=Path, help="Model folder (vae or beta-vae; any for pairs).")
    p.add_argument("inputs", nargs="*", help="Images to take the interpolated patches from.")
    p.add_argument("--out", type=Path, required=True, help="Output folder.")
    p.add_argument("--samples", type=int, default=16, help="Draws from the prior.")
    p.add_argument("--pairs", type=int, default=4, help="Interpolated pairs of patches.")
    p.add_argument("--steps", type=int, default=8, help="Images per interpolation/traversal.")
    p.add_argument("--units", type=int, default=8, help="Traversed units (highest KL first).")
    p.add_argument("--span", type=float, default=3.0, help="Traverse -SPAN..SPAN sd.")
    p.add_argument(
        "--at", nargs=2, metavar="Z,Y,X", help="Two patch centres in the first input to join."
    )
    p.add_argument("--seed", type=int, default=0, help="Seed of draws and patches.")
    p.add_argument("--overwrite", action="store_true", help="Replace an earlier output.")
    p.set_defaults(func=handlers.generate)

    p = command(
        "pipeline", help="Pretrain, score, fine-tune, evaluate, compare, detect and report."
    )
    p.add_argument("config", type=Path, help="Pipeline YAML (see configs/demo.yaml).")
    p.add_argument("--out", type=Path, required=True, help="Run folder (continues if present).")
    p.add_argument("--seed", type=int, help="Random seed (overrides the file's).")
    p.add_argument("--overwrite", action="store_true", help="Start again; replaces a run.")
    p.set_defaults(func=handlers.pipeline)

    p = command("report", help="Write one self-contained HTML report of runs.")
    p.add_argument("runs", nargs="+", type=Path, help="Pipeline, model, evaluation, ... folders.")
    p.add_argument("--out", type=Path, required=True, help="The .html file to write.")
    p.add_argument("--title", default="emae report", help="Page title.")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing report.")
    p.set_defaults(func=handlers.report)

    p = command("demo", help="Run the whole pipeline on the embedded sample data.")
    p.add_argument("--out", type=Path, default=Path("emae-demo"), help="Results folder.")
    p.add_argument("--seed", type=int, default=0, help="Random seed.")
    p.add_argument("--quick", action="store_true", help="Tiny data and fewer steps (< 3 min).")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing results folder.")
    p.set_defaults(func=handlers.demo)
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
