"""The convolutional autoencoder: ``(N, C, H, W) -> (N, C, H, W)``.

Trained to reconstruct clean EM, it reconstructs tissue well and artifacts badly; the
reconstruction error is then the anomaly map. Trained on corrupted inputs with clean targets it
is the denoising autoencoder (same module, see :mod:`emae.models.registry`).

Two kinds of bottleneck (``m = 2**len(channels)``, ``h, w = ceil(H/m), ceil(W/m)``)::

    spatial   x (N, C, H, W) -> encoder -> z (N, latent_channels, h, w) -> decoder -> (N, C, H, W)
    vector    x (N, C, P, P) -> encoder -> (N, latent_channels, P/m, P/m) -> flatten -> Linear
                -> z (N, latent_dim) -> Linear -> unflatten -> decoder -> (N, C, P, P)

The spatial model is fully convolutional and takes any H, W >= m: inputs are reflect-padded up
to multiples of m and the reconstruction is cropped back, so tiles of any size work. The vector
model takes ``patch_size x patch_size`` patches only.
"""

from __future__ import annotations

from torch import Tensor, nn

from emae.models.blocks import (
    Activation,
    Decoder,
    Encoder,
    Latent,
    Norm,
    center_crop,
    check_architecture,
    check_patch,
)


class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder without skip connections.

    Parameters
    ----------
    in_channels
        Channels of the image, 1 for grayscale EM.
    channels
        Feature channels after each down-sampling level; ``depth = len(channels)`` and the
        encoder divides H and W by ``2**depth``.
    latent_channels
        Channels of the spatial latent map (and of :meth:`features` in both modes).
    norm
        ``"group"`` (default: independent of the batch, so it works with the batches of 4-16
        that fit on a laptop), ``"batch"`` or ``"none"``. GroupNorm normalizes each feature map
        over the whole input, so every output pixel depends on the whole tile; ``"batch"``
        (running statistics at inference) and ``"none"`` keep inference local and independent
        of the tile size, which feature-space anomaly scores and tiled inference need.
    latent
        ``"spatial"`` (a latent map, fully convolutional) or ``"vector"`` (a latent vector of
        ``latent_dim`` for fixed-size patches).
    latent_dim
        Size of the latent vector; used only when ``latent="vector"``.
    patch_size
        Height = width of the patches; required when ``latent="vector"`` (a multiple of
        ``2**depth``), ignored otherwise.
    activation
        ``"leaky_relu"`` (slope 0.2, default), ``"relu"``, ``"gelu"`` or ``"silu"``.

    Attributes
    ----------
    encoder : Encoder
        ``(N, C, H, W) -> (N, latent_channels, h, w)``; reusable alone by a classifier.
    decoder : Decoder
        ``(N, latent_channels, h, w) -> (N, C, h*m, w*m)``.
    feature_channels : int
        Channels of :meth:`features`, for a 1x1-convolution head.
    downsample_factor : int
        ``m = 2**depth``.
    """

    _heads = 1  # latent tensors the encoder emits per unit (see VariationalAutoencoder)

    def __init__(
        self,
        *,
        in_channels: int = 1,
        channels: tuple[int, ...] = (32, 64, 128),
        latent_channels: int = 64,
        norm: Norm = "group",
        latent: Latent = "spatial",
        latent_dim: int = 128,
        patch_size: int | None = None,
        activation: Activation = "leaky_relu",
    ) -> None:
        super().__init__()
        channels = check_architecture(
            in_channels=in_channels,
            channels=channels,
            latent_channels=latent_channels,
            norm=norm,
            latent=latent,
            latent_dim=latent_dim,
            patch_size=patch_size,
            activation=activation,
        )
        self.latent = latent
        self.patch_size = patch_size if latent == "vector" else None
        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.latent_dim = latent_dim
        self.downsample_factor = 2 ** len(channels)
        # A VAE's encoder emits a mean and a log-variance per latent unit: _heads = 2.
        self.feature_channels = latent_channels * (self._heads if latent == "spatial" else 1)
        blocks = {"norm": norm, "activation": activation}
        self.encoder = Encoder(in_channels, channels, self.feature_channels, **blocks)
        if latent == "vector":
            side = patch_size // self.downsample_factor
            flat = latent_channels * side * side
            self.to_vector = nn.Sequential(nn.Flatten(), nn.Linear(flat, latent_dim * self._heads))
            self.from_vector = nn.Sequential(
                nn.Linear(latent_dim, flat), nn.Unflatten(1, (latent_channels, side, side))
            )
        self.decoder = Decoder(latent_channels, channels, in_channels, **blocks)

    def features(self, x: Tensor) -> Tensor:
        """The encoder's last spatial feature map.

        ``(N, C, H, W) float -> (N, feature_channels, ceil(H/m), ceil(W/m))``; in spatial mode
        this is the latent map itself.
        """
        if self.patch_size is not None:
            check_patch(x, self.patch_size)
        return self.encoder(x)

    def encode(self, x: Tensor) -> Tensor:
        """``(N, C, H, W) -> z``: ``(N, latent_channels, h, w)`` or ``(N, latent_dim)``."""
        f = self.features(x)  # (N, latent_channels, h, w)
        return f if self.latent == "spatial" else self.to_vector(f)

    def decode(self, z: Tensor) -> Tensor:
        """``z -> (N, C, h*m, w*m)``, the inverse of :meth:`encode` up to the padding.

        For inputs whose H, W are multiples of m (and always in vector mode) that is
        ``(N, C, H, W)``; :meth:`forward` crops the padding away otherwise.
        """
        if self.latent == "vector":
            z = self.from_vector(z)  # (N, latent_channels, P/m, P/m)
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruct ``x``: ``(N, C, H, W) -> (N, C, H, W)``, same dtype, linear output."""
        return center_crop(self.decode(self.encode(x)), x.shape[-2:])
