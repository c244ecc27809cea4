"""The variational autoencoder: the conv autoencoder with a Gaussian latent.

The encoder emits a mean and a log-variance per latent unit; training decodes a sample
``z = mu + exp(logvar / 2) * eps`` and adds ``beta * KL(q(z|x) || N(0, I))`` to the
reconstruction loss (:func:`emae.train.losses.vae_loss`; beta and its warm-up belong to the loss).
Scoring decodes the mean, so :meth:`VariationalAutoencoder.forward` is deterministic.

Shapes (``m = 2**len(channels)``, ``h, w = ceil(H/m), ceil(W/m)``)::

    spatial   x (N, C, H, W) -> encoder -> (N, 2*latent_channels, h, w) -> split
                -> mu, logvar (N, latent_channels, h, w) -> decoder -> (N, C, H, W)
    vector    x (N, C, P, P) -> encoder -> (N, latent_channels, P/m, P/m) -> flatten -> Linear
                -> mu, logvar (N, latent_dim) -> Linear -> unflatten -> decoder -> (N, C, P, P)
"""

from __future__ import annotations

import torch
from torch import Tensor

from emae.errors import EmaeError
from emae.models.blocks import center_crop
from emae.models.conv_ae import ConvAutoencoder


class VariationalAutoencoder(ConvAutoencoder):
    """Convolutional VAE without skip connections.

    Parameters, :meth:`features` and :meth:`decode` are those of
    :class:`emae.models.ConvAutoencoder`; the latent is Gaussian.

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

    _heads = 2  # the encoder emits mu and logvar for every latent unit

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
