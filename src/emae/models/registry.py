"""The model registry: one name per autoencoder, and how it is trained.

Each entry is a :class:`ModelSpec`: the constructor of a bare ``nn.Module`` plus what the
training loss must know about it (denoising: corrupt the inputs, keep clean targets;
blind-spot: mask pixels and score only them, :mod:`emae.train.blind_spot`;
variational: add ``beta * KL``; fitted in closed form: no gradient loop at all, see
:meth:`emae.models.pca.PCAAutoencoder.fit_patches`). Adding a model means one module and one
entry here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from emae.errors import EmaeError
from emae.models.codec import Codec
from emae.models.conv_ae import ConvAutoencoder
from emae.models.hyperprior import HyperpriorCodec
from emae.models.pca import PCAAutoencoder
from emae.models.unet import InpaintingUNet, UNet
from emae.models.vae import VariationalAutoencoder


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes
    ----------
    name
        Registry name, as written in configs and on the command line.
    build
        Constructor taking keyword arguments only, returning the ``nn.Module``.
    denoising
        Train on corrupted inputs (:class:`emae.train.corruption.Corruption`) against clean targets.
    blind_spot
        Train to predict masked pixels of noisy inputs from their surroundings
        (:func:`emae.train.blind_spot.blind_spot_loss`): a denoiser that needs no clean targets.
    inpainting
        Train to fill holes cut into the inputs; the module takes the image and the hole mask
        as two channels.
    variational
        The module is a :class:`VariationalAutoencoder`; train with
        :func:`emae.train.losses.vae_loss`.
    beta
        Default weight of the KL term in the training loss (0 for non-variational models).
    fitted_in_closed_form
        The module has no trainable parameters and is fitted on normal patches by its
        ``fit_patches(patches, *, seed)`` method instead of the gradient loop.
    codec
        The module is a :class:`~emae.models.codec.Codec`; train with
        :func:`emae.train.losses.rate_distortion_loss` and freeze its coding tables afterwards.
    defaults
        Run options (:class:`emae.train.config.PretrainConfig` fields) that differ for this
        model when the run does not set them.
    description
        One line for ``--help`` and listings.
    """

    name: str
    build: Callable[..., nn.Module]
    denoising: bool = False
    blind_spot: bool = False
    inpainting: bool = False
    variational: bool = False
    beta: float = 0.0
    fitted_in_closed_form: bool = False
    codec: bool = False
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "conv-ae",
            ConvAutoencoder,
            description="convolutional autoencoder trained to reconstruct its input",
        ),
        ModelSpec(
            "denoising-ae",
            ConvAutoencoder,
            denoising=True,
            description="convolutional autoencoder trained to restore corrupted inputs",
        ),
        ModelSpec(
            "blind-spot",
            UNet,
            blind_spot=True,
            description="U-Net denoiser trained on noisy images alone (Noise2Void blind spots); "
            "the recommended denoiser for EM",
        ),
        ModelSpec(
            "inpainting-ae",
            InpaintingUNet,
            inpainting=True,
            description="U-Net trained to fill holes (blobs, lines, bands) cut into the images",
        ),
        ModelSpec(
            "vae",
            VariationalAutoencoder,
            variational=True,
            beta=1.0,
            description="variational autoencoder (beta = 1, the ELBO)",
        ),
        ModelSpec(
            "beta-vae",
            VariationalAutoencoder,
            variational=True,
            beta=4.0,
            description="variational autoencoder with a stronger KL term (beta = 4)",
        ),
        ModelSpec(
            "codec",
            Codec,
            codec=True,
            defaults={"channels": (32, 32, 32, 32), "latent_channels": 64, "patch_size": 64},
            description="learned image codec (quantized latent, learned entropy model) trained "
            "on rate + lambda * distortion; for emae compress",
        ),
        ModelSpec(
            "codec-hyperprior",
            HyperpriorCodec,
            codec=True,
            defaults={"channels": (32, 32, 32, 32), "latent_channels": 64, "patch_size": 64},
            description="learned image codec whose latent's mean and scale are sent as side "
            "information (mean-scale hyperprior); for emae compress",
        ),
        ModelSpec(
            "pca",
            PCAAutoencoder,
            fitted_in_closed_form=True,
            description="PCA: the linear autoencoder baseline, fitted in closed form on tiles",
        ),
    )
}


def available_models() -> tuple[str, ...]:
    """Names of the registered models, in registration order."""
    return tuple(MODELS)


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered as ``name``; an :class:`EmaeError` names unknown ones."""
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(MODELS)
        raise EmaeError(f"unknown model {name!r}; known models: {known}") from None


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Build the registered model ``name`` with constructor keyword arguments ``kwargs``.

    Raises
    ------
    EmaeError
        For an unknown name, an argument the constructor does not take, or a bad value.
    """
    spec = model_spec(name)
    accepted = inspect.signature(spec.build).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise EmaeError(
            f"model {name!r} takes no argument(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(accepted)}"
        )
    return spec.build(**kwargs)
