"""Autoencoders: bare ``nn.Module``s mapping ``(N, C, H, W)`` images to reconstructions.

Build them by name through the registry (:func:`build_model`); each model's module shows its
architecture top to bottom with tensor shapes.
"""

from emae.models.codec import Codec
from emae.models.conv_ae import ConvAutoencoder
from emae.models.pca import PCAAutoencoder
from emae.models.registry import MODELS, ModelSpec, available_models, build_model, model_spec
from emae.models.unet import InpaintingUNet, UNet
from emae.models.vae import VariationalAutoencoder

__all__ = [
    "MODELS",
    "Codec",
    "ConvAutoencoder",
    "InpaintingUNet",
    "ModelSpec",
    "PCAAutoencoder",
    "UNet",
    "VariationalAutoencoder",
    "available_models",
    "build_model",
    "model_spec",
]
