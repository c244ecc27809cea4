"""The variational autoencoder: the conv autoencoder with a Gaussian latent.

The encoder emits a mean and a log-variance per latent unit; training decodes a sample
``z = mu + exp(logvar / 2) * eps`` and adds ``beta * KL(q(z|x) || N(0, I))`` to the
reconstruction loss (:func:`emae.losses.vae_loss`; beta and its warm-up belong to the loss).
Scoring decodes the mean, so :meth:`VariationalAutoencoder.forward` is deterministic.

Shapes (``m = 2**len(channels)``, ``h, w = ceil(H/m), ceil(W/m)``)::

    spatial   x (N, C, H, W) -> encoder -> (N, 2*latent_channels, h, w) -> split
                -> mu, logvar (N, latent_channels, h, w) -> decoder -> (N, C, H, W)
    vector    x (N, C, P, P) -> encoder -> (N, latent_channels, P/m, P/m) -> flatten -> Linear
                -> mu, logvar (N, latent_dim) -> Linear -> unflatten -> decoder -> (N, C, P, P)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from emae.errors import EmaeError
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


class VariationalAutoencoder(nn.Module):
    """Convolutional VAE without skip connections.

    Parameters are those of :class:`emae.models.ConvAutoencoder`; the latent is Gaussian.

    Attributes
    ----------
    encoder : Encoder
        ``(N, C, H, W) -> (N, feature_channels, h, w)``: in spatial mode the mean and log-variance
        maps stacked along channels, in vector mode the map that is flattened.
    decoder : Decoder
        ``(N, latent_channels, h, w) -> (N, C, h*m, w*m)``.
    feature_channels : int
        Channels of :meth:`features`: ``2 * latent_channels`` (spatial) or ``latent_channels``.
    downsample_factor : int
        ``m = 2**depth``.
    """

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
            in_channels=in_channels, channels=channels, latent_channels=latent_channels,
            norm=norm, latent=latent, latent_dim=latent_dim, patch_size=patch_size,
            activation=activation,
        )  # fmt: skip
        self.latent = latent
        self.patch_size = patch_size if latent == "vector" else None
        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.latent_dim = latent_dim
        self.downsample_factor = 2 ** len(channels)
        self.feature_channels = latent_channels * (2 if latent == "spatial" else 1)
        blocks = {"norm": norm, "activation": activation}
        self.encoder = Encoder(in_channels, channels, self.feature_channels, **blocks)
        if latent == "vector":
            side = patch_size // self.downsample_factor
            flat = latent_channels * side * side
            self.to_vector = nn.Sequential(nn.Flatten(), nn.Linear(flat, 2 * latent_dim))
            self.from_vector = nn.Sequential(
                nn.Linear(latent_dim, flat), nn.Unflatten(1, (latent_channels, side, side))
            )
        self.decoder = Decoder(latent_channels, channels, in_channels, **blocks)

    def features(self, x: Tensor) -> Tensor:
        """The encoder's last spatial feature map: ``(N, feature_channels, h, w)``."""
        if self.patch_size is not None:
            check_patch(x, self.patch_size)
        return self.encoder(x)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, C, H, W) -> (mu, logvar)`` of q(z|x), each ``(N, latent_channels, h, w)``
        (spatial) or ``(N, latent_dim)`` (vector)."""
        f = self.features(x)
        if self.latent == "vector":
            f = self.to_vector(f)  # (N, 2 * latent_dim)
        mu, logvar = f.chunk(2, dim=1)
        return mu, logvar

    @staticmethod
    def reparameterize(
        mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw ``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)``, differentiably.

        ``eps`` is drawn on the generator's device (torch's default generator when ``None``)
        and moved to ``mu``'s, so a CPU generator gives the same draw for a model on any device.
        """
        device = generator.device if generator is not None else mu.device
        eps = torch.randn(mu.shape, generator=generator, device=device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps.to(mu.device)

    def decode(self, z: Tensor) -> Tensor:
        """``z -> (N, C, h*m, w*m)``; see :meth:`emae.models.ConvAutoencoder.decode`."""
        if self.latent == "vector":
            z = self.from_vector(z)  # (N, latent_channels, P/m, P/m)
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruct ``x`` from the posterior mean: ``(N, C, H, W) -> (N, C, H, W)``."""
        mu, _ = self.encode(x)
        return center_crop(self.decode(mu), x.shape[-2:])

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator,
        spatial_shape: tuple[int, int] | None = None,
    ) -> Tensor:
        """Decode ``n`` draws from the prior N(0, I): ``(n, C, H, W)``.

        ``spatial_shape = (H, W)`` is required in spatial mode; in vector mode the output is
        ``(n, C, patch_size, patch_size)`` and ``spatial_shape`` must be omitted or equal.
        """
        m = self.downsample_factor
        if self.latent == "vector":
            size = (self.patch_size, self.patch_size)
            if spatial_shape is not None and tuple(spatial_shape) != size:
                raise EmaeError(
                    f"this vector-latent VAE samples {size[0]}x{size[1]} patches, "
                    f"got spatial_shape={tuple(spatial_shape)}"
                )
            latent_shape: tuple[int, ...] = (n, self.latent_dim)
        else:
            if spatial_shape is None or min(spatial_shape) < m:
                raise EmaeError(
                    f"a spatial-latent VAE needs spatial_shape=(H, W) with H, W >= {m}, "
                    f"got spatial_shape={spatial_shape!r}"
                )
            size = tuple(spatial_shape)
            latent_shape = (n, self.latent_channels, -(-size[0] // m), -(-size[1] // m))
        weight = self.decoder.head.weight
        z = torch.randn(latent_shape, generator=generator, device=generator.device)
        return center_crop(self.decode(z.to(weight)), size)

    @staticmethod
    def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
        """``KL(N(mu, exp(logvar)) || N(0, I))`` per sample, summed over latent units: ``(N,)``."""
        kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)
        return kl.flatten(1).sum(dim=1)
