"""The options of ``emae embed`` and ``emae map``: one shallow pydantic model each, validated at
the edge (the CLI, the pipeline's ``latent:`` section and the API take the same fields)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from emae.train.config import PretrainConfig
from emae.train.options import Device, Precision, Seed


class EmbedConfig(BaseModel):
    """Which patches an embedding holds and what vector describes each."""

    model_config = ConfigDict(extra="forbid")

    vector: Literal["levels", "latent", "code", "residual"] = Field(
        "residual",
        description="residual: handcrafted features of what the model could not reconstruct "
        "(artifacts); levels: mean and std of every encoder level (tissue texture); latent: the "
        "latent's mean; code: the whole latent code (shapes) (emae.latent.vectors; "
        "docs/benchmarks.md, 'Latent space').",
    )
    stride: int | None = Field(
        None, ge=1, description="Grid of image inputs: a patch every STRIDE pixels (default: P)."
    )
    sample: int | None = Field(
        None, ge=1, description="Image inputs: N patches drawn at random instead of the grid."
    )
    input: Literal["surrounding", "cropped", "masked", "whole"] = Field(
        "surrounding", description="What a whole-image labels row shows (emae.data.objects)."
    )
    anomaly: bool = Field(
        True, description="Add each patch's anomaly score when the model folder holds one."
    )
    part_rows: int = Field(4096, ge=1, description="Rows per Parquet part (resume unit).")
    batch_size: int = Field(256, ge=1, le=65536, description="Patches per forward pass.")
    device: Device = "cpu"
    precision: Precision = Field(
        "auto",
        description="Of the forward passes: auto (bf16 where the CPU or GPU has it natively), "
        "fp32 or bf16 (docs/benchmarks.md, 'Latent space').",
    )
    seed: Seed = 0


class MapConfig(BaseModel):
    """The map of an embedding (:class:`emae.latent.map.LatentMap`) and its figures."""

    model_config = ConfigDict(extra="forbid")

    n_neighbors: int = Field(15, ge=2, description="UMAP neighbours; also to place new rows.")
    scaling: Literal["column", "global"] = Field(
        "column",
        description="Scale each column, or all by one number (emae.latent.map; global suits "
        "the code of a vector latent: docs/benchmarks.md, 'Latent space').",
    )
    min_dist: float = Field(0.0, ge=0, le=1, description="UMAP min_dist (0 suits clustering).")
    clusterer: Literal["hdbscan", "kmeans"] = Field("hdbscan", description="Clustering method.")
    n_clusters: int = Field(8, ge=2, description="Clusters of k-means.")
    min_cluster_size: int | None = Field(
        None, ge=2, description="Smallest HDBSCAN cluster (default: 1% of the rows, >= 5)."
    )
    min_samples: int | None = Field(
        10, ge=1, description="HDBSCAN min_samples (umap-learn's clustering recipe: 10)."
    )
    pca_components: int = Field(50, ge=2, description="PCA columns before UMAP and neighbours.")
    novelty_neighbors: int = Field(10, ge=2, description="Neighbours of the novelty score.")
    novelty_fpr: float = Field(
        0.05, gt=0, lt=1, description="Share of the fitted rows flagged novel (the threshold)."
    )
    max_fit: int = Field(
        20000, ge=10, description="Rows the map is fitted on (a seeded sample); others are placed."
    )
    montage: int = Field(8, ge=1, le=64, description="Patches per row of a cluster's montage.")
    seed: Seed = 0


class LatentSettings(BaseModel):
    """The pipeline's ``latent:`` section: a map of the unlabeled data, the labeled and test
    patches placed in it, and generation."""

    model_config = ConfigDict(extra="forbid")

    sample: int = Field(
        4000, ge=20, description="Random patches of the unlabeled images the map is fitted on."
    )
    embed: EmbedConfig = Field(default_factory=EmbedConfig, description="EmbedConfig options.")
    map: MapConfig = Field(default_factory=MapConfig, description="MapConfig options.")
    generator: PretrainConfig | None = Field(
        None,
        description="Options of a vae or beta-vae pretrained on the unlabeled images for "
        "emae generate; None: generate with the autoencoder (interpolations only).",
    )
