"""PCA on image tiles: the linear autoencoder baseline, ``(N, 1, H, W) -> (N, 1, H, W)``.

A linear autoencoder encodes a ``P x P`` tile ``t`` (flattened, ``D = P*P`` values) as
``z = A t + a`` and decodes it as ``t' = B z + b``. Among all linear autoencoders with ``k``
latent units, those with the smallest mean squared error reconstruct every tile by its
orthogonal projection onto the top-``k`` principal subspace of the training tiles (Baldi &
Hornik, 1989); PCA is the one with tied, orthonormal weights ``V`` (``(k, D)``, ``V V^T = I``)::

    z = V (t - mu)        (k,)    coefficients, largest variance first
    t' = V^T z + mu       (D,)    reconstruction

Gradient descent would only approach this optimum, so it is computed in closed form
(:meth:`PCAAutoencoder.fit_patches`, scikit-learn's PCA) instead of trained.

Here it is the baseline: a deep autoencoder must beat it to justify its non-linearity. It
reconstructs what normal tissue texture has in common and leaves out what varies rarely, so its
reconstruction error, SSIM and the Mahalanobis distance of its coefficients score artifacts with
the same code as any other registered model.

Whole images are handled fully convolutionally, as overlapping tiles at ``stride`` ``s``::

    x (N, 1, H, W) -> pad -> unfold -> tiles (N, D, L) -> project -> fold -> / overlap -> crop

The input is reflect-padded (replicate where it is too small to reflect) by at least ``P - s``
on every side, so every pixel, borders included, is averaged over the same number of tiles
(``(P/s)**2`` when ``s`` divides ``P``). The coefficients of the tiles on a grid of
``ceil(H/s) x ceil(W/s)``, tile ``k`` centred on pixel ``k*s + (s-1)/2`` (up to half a pixel
when ``P - s`` is odd), are the feature map (:meth:`PCAAutoencoder.features`); that is where
:meth:`emae.anomaly.statistics.FeatureStatistics.anomaly_map` expects a feature with
``downsample_factor = s``.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emae.errors import EmaeError, NotFittedError
from emae.models.blocks import check_positive

logger = logging.getLogger(__name__)

#: Default upper bound on the tiles :meth:`PCAAutoencoder.fit_patches` draws from its images.
MAX_TILES = 200_000


def _as_images(patches: np.ndarray | Tensor) -> Tensor:
    """``(N, H, W)`` or ``(N, 1, H, W)`` real numbers -> ``(N, H, W)`` finite float32 on the CPU."""
    is_tensor = isinstance(patches, Tensor)
    a = patches.detach().cpu() if is_tensor else np.asarray(patches)
    shape, dtype = tuple(a.shape), a.dtype
    real = not (a.is_complex() or dtype == torch.bool) if is_tensor else dtype.kind in "uif"
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if not real or a.ndim != 3 or 0 in a.shape:
        raise EmaeError(
            f"patches must be a non-empty (N, H, W) or (N, 1, H, W) array of real numbers, "
            f"got shape {shape} dtype {dtype}"
        )
    x = a.float() if is_tensor else torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if not torch.isfinite(x).all():
        raise EmaeError(f"patches of shape {tuple(x.shape)} hold NaN or infinite values")
    return x


def _pad_axis(x: Tensor, axis: int, before: int, after: int) -> Tensor:
    """Pad ``(N, C, H, W)`` along ``axis`` (-2 or -1): reflect, or replicate if too small."""
    size = x.shape[axis]
    mode = "reflect" if max(before, after) < size else "replicate"
    pad = (before, after, 0, 0) if axis == -1 else (0, 0, before, after)
    return F.pad(x, pad, mode=mode)


class PCAAutoencoder(nn.Module):
    """PCA of ``patch_size x patch_size`` tiles as a fully convolutional autoencoder.

    Parameters
    ----------
    patch_size
        Side ``P`` of the square tiles PCA works on; ``D = P*P`` values per tile.
    n_components
        Principal components kept, ``1 <= k <= P*P``: the latent units per tile.
    stride
        Step ``s`` between tiles, ``1 <= s <= P``; ``None`` (default) is ``P // 2`` (at least 1):
        overlapping tiles, so no seams at tile borders.
    in_channels
        Channels of the image; only 1 (grayscale EM) is supported.

    Attributes
    ----------
    mean : Tensor
        ``(P*P,)`` float32 buffer, the mean tile (row-major ``y * P + x``); zeros until fitted.
    components : Tensor
        ``(n_components, P*P)`` float32 buffer, orthonormal rows, largest variance first.
    fitted : Tensor
        0-d uint8 buffer, 1 once :meth:`fit_patches` ran (or fitted weights were loaded).
    feature_channels : int
        Channels of :meth:`features`, ``n_components``.
    downsample_factor : int
        ``s``: one feature vector per ``s x s`` cell of the input.
    latent : str
        ``"spatial"``: the latent is a map, like the spatial convolutional autoencoder's.
    """

    latent = "spatial"

    def __init__(
        self,
        *,
        patch_size: int = 16,
        n_components: int = 32,
        stride: int | None = None,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        check_positive("patch_size", patch_size)
        check_positive("n_components", n_components)
        if stride is None:
            stride = max(patch_size // 2, 1)
        check_positive("stride", stride)
        if stride > patch_size:
            raise EmaeError(
                f"stride must be <= patch_size (tiles must cover every pixel), "
                f"got stride={stride} with patch_size={patch_size}"
            )
        if n_components > patch_size * patch_size:
            raise EmaeError(
                f"n_components must be <= patch_size**2 = {patch_size * patch_size} (values per "
                f"tile), got n_components={n_components} with patch_size={patch_size}"
            )
        if in_channels != 1:
            raise EmaeError(
                f"PCAAutoencoder supports in_channels=1 (grayscale) only, got {in_channels!r}"
            )
        self.patch_size = patch_size
        self.n_components = n_components
        self.stride = stride
        self.in_channels = in_channels
        self.feature_channels = n_components
        self.downsample_factor = stride
        d = patch_size * patch_size
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("components", torch.zeros(n_components, d))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.uint8))

    # --- fitting -------------------------------------------------------------------------------

    def fit_patches(
        self, patches: np.ndarray | Tensor, *, seed: int = 0, max_tiles: int = MAX_TILES
    ) -> PCAAutoencoder:
        """Fit the mean tile and the principal components to the tiles of normal images.

        Every ``P x P`` tile inside the images (no padding) on a grid of ``stride`` is a sample;
        when there are more than ``max_tiles``, a random subset of ``max_tiles`` drawn from
        ``seed`` is used. The tiles are centred in float64 precision, then scikit-learn's
        ``PCA(n_components, svd_solver="auto", random_state=seed)`` finds the components.

        Parameters
        ----------
        patches
            ``(N, H, W)`` or ``(N, 1, H, W)`` normalized images (axes ``"NYX"``), float32 or
            any real dtype, finite, with ``H, W >= patch_size``.
        seed
            Seed of the tile subset and of the randomized solvers.
        max_tiles
            Most tiles to fit on; memory is about ``max_tiles * P*P * 4`` bytes.

        Returns
        -------
        PCAAutoencoder
            ``self``, fitted; the buffers keep their device.
        """
        from sklearn.decomposition import PCA  # here: importing it costs a second at startup

        check_positive("max_tiles", max_tiles)
        x = _as_images(patches)  # (N, H, W) float32, CPU
        p, s, k = self.patch_size, self.stride, self.n_components
        n, h, w = x.shape
        if min(h, w) < p:
            raise EmaeError(
                f"patch_size must be <= the height and width of the patches, "
                f"got patch_size={p} for patches of {h}x{w}"
            )
        grid = x.unfold(1, p, s).unfold(2, p, s)  # (N, Lh, Lw, P, P), a view: nothing copied
        n_tiles = grid.shape[0] * grid.shape[1] * grid.shape[2]
        if n_tiles < k:
            raise EmaeError(
                f"n_components={k} needs at least {k} tiles to fit on, got {n_tiles} tiles of "
                f"{p}x{p} at stride {s} from {n} patches of {h}x{w}; give more patches"
            )
        if n_tiles > max_tiles:
            chosen = np.sort(np.random.default_rng(seed).choice(n_tiles, max_tiles, replace=False))
            i, rest = np.divmod(chosen, grid.shape[1] * grid.shape[2])
            y, x_ = np.divmod(rest, grid.shape[2])
            index = tuple(torch.from_numpy(a) for a in (i, y, x_))
            tiles = grid[index].reshape(max_tiles, p * p).numpy()  # (T, D), only T copied
        else:
            tiles = grid.reshape(n_tiles, p * p).numpy().copy()  # (T, D)
        # scikit-learn's covariance solver forms X^T X before centring: centre first, exactly.
        mean = tiles.mean(axis=0, dtype=np.float64)  # (D,)
        tiles -= mean.astype(np.float32)
        if not tiles.any():
            raise EmaeError(
                f"all {len(tiles)} tiles of the patches are identical (constant patches?); "
                f"PCA needs patches that vary"
            )
        pca = PCA(n_components=k, svd_solver="auto", random_state=seed).fit(tiles)
        with torch.no_grad():
            self.mean.copy_(torch.from_numpy(mean + pca.mean_))
            self.components.copy_(torch.from_numpy(pca.components_))
            self.fitted.fill_(1)
        percent = 100 * float(np.sum(pca.explained_variance_ratio_))
        logger.info(
            "PCA: %d components explain %.1f%% of the variance of %d tiles", k, percent, len(tiles)
        )
        return self

    # --- geometry ------------------------------------------------------------------------------

    def _grid(self, size: int, extra: int) -> tuple[int, int, int]:
        """Padding before, after, and number of tiles along an axis of ``size`` pixels.

        ``extra = 0`` is the feature grid: ``ceil(size/s)`` tiles, tile ``k`` centred on pixel
        ``k*s + (s-1)/2`` of the map upsampled by ``s`` and center-cropped to ``size``. Each
        ``extra`` adds one tile at each end, on the same grid.
        """
        p, s = self.patch_size, self.stride
        cells = -(-size // s)
        before = (p - s) // 2 + (cells * s - size) // 2 + extra * s
        count = cells + 2 * extra
        return before, (count - 1) * s + p - size - before, count

    def _tiles(self, x: Tensor, extra: int) -> tuple[Tensor, tuple[int, int], tuple[int, int]]:
        """``(N, 1, H, W) -> (N, D, L)`` float32 tiles, grid shape and padding before (y, x)."""
        self._check(x)
        (top, bottom, rows), (left, right, cols) = (
            self._grid(x.shape[-2], extra),
            self._grid(x.shape[-1], extra),
        )
        x = _pad_axis(_pad_axis(x.float(), -2, top, bottom), -1, left, right)  # (N, 1, Hp, Wp)
        tiles = F.unfold(x, self.patch_size, stride=self.stride)  # (N, D, rows*cols)
        return tiles, (rows, cols), (top, left)

    def _untile(self, tiles: Tensor, grid: tuple[int, int]) -> Tensor:
        """``(N, D, rows*cols)`` tiles on a grid -> their average ``(N, 1, Hp, Wp)`` float32."""
        p, s = self.patch_size, self.stride
        padded = tuple((n - 1) * s + p for n in grid)
        total = F.fold(tiles, padded, p, stride=s)  # (N, 1, Hp, Wp)
        ones = torch.ones_like(tiles[:1, :, :])
        return total / F.fold(ones, padded, p, stride=s)  # overlap count >= 1 everywhere

    def _check_fitted(self) -> None:
        if not bool(self.fitted):
            raise NotFittedError(
                "this PCAAutoencoder is not fitted yet; call fit_patches(patches) first "
                "or load fitted weights"
            )

    def _check(self, x: Tensor) -> None:
        self._check_fitted()
        if x.ndim != 4 or x.shape[1] != self.in_channels or 0 in x.shape[-2:]:
            raise EmaeError(
                f"expected a tensor of shape (N, {self.in_channels}, H, W) with H, W >= 1, "
                f"got shape {tuple(x.shape)}"
            )

    # --- the autoencoder -------------------------------------------------------------------

    def _project(self, tiles: Tensor) -> Tensor:
        """``(N, D, L) -> (N, k, L)`` coefficients of the centred tiles."""
        centred = tiles - self.mean.float()[:, None]
        return torch.einsum("kd,ndl->nkl", self.components.float(), centred)

    def _unproject(self, z: Tensor) -> Tensor:
        """``(N, k, L) -> (N, D, L)`` tiles from their coefficients."""
        tiles = torch.einsum("kd,nkl->ndl", self.components.float(), z.float())
        return tiles + self.mean.float()[:, None]

    def features(self, x: Tensor) -> Tensor:
        """PCA coefficients of the tiles on the feature grid.

        ``(N, 1, H, W) float -> (N, n_components, ceil(H/s), ceil(W/s))`` in ``x``'s dtype; the
        vector at ``(i, j)`` describes the ``P x P`` tile centred on pixel
        ``(i*s + (s-1)/2 - top, j*s + (s-1)/2 - left)`` with ``top, left`` the offsets of
        :func:`emae.models.blocks.center_crop` from ``(h*s, w*s)`` to ``(H, W)``.
        """
        with torch.autocast(x.device.type, enabled=False):
            tiles, (rows, cols), _ = self._tiles(x, extra=0)
            z = self._project(tiles)  # (N, k, rows*cols)
        return z.reshape(len(x), self.n_components, rows, cols).to(x.dtype)

    def encode(self, x: Tensor) -> Tensor:
        """``(N, 1, H, W) -> z (N, n_components, h, w)``, the same as :meth:`features`."""
        return self.features(x)

    def decode(self, z: Tensor) -> Tensor:
        """``z (N, n_components, h, w) -> (N, 1, h*s, w*s)``, the average of the decoded tiles.

        The inverse of :meth:`encode` up to the padding: cropped with
        :func:`~emae.models.blocks.center_crop` to ``(H, W)`` it is the reconstruction from the
        feature grid's tiles alone. :meth:`forward` adds the tiles that overlap the border, so
        the two agree except within about ``P/2`` pixels of the border.
        """
        self._check_fitted()
        if z.ndim != 4 or z.shape[1] != self.n_components:
            raise EmaeError(
                f"expected a latent of shape (N, {self.n_components}, h, w), "
                f"got shape {tuple(z.shape)}"
            )
        n, _, rows, cols = z.shape
        s, offset = self.stride, (self.patch_size - self.stride) // 2
        with torch.autocast(z.device.type, enabled=False):
            tiles = self._unproject(z.reshape(n, self.n_components, rows * cols))
            canvas = self._untile(tiles, (rows, cols))  # (N, 1, (rows-1)*s + P, ...)
        out = canvas[..., offset : offset + rows * s, offset : offset + cols * s]
        return out.to(z.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruct ``x``: ``(N, 1, H, W) -> (N, 1, H, W)``, any ``H, W >= 1``, same dtype.

        Computed in float32 (also under autocast) from tiles on the feature grid extended far
        enough past the border that every pixel is covered by the same number of tiles.
        """
        p, s = self.patch_size, self.stride
        extra = -(-((p - s + 1) // 2) // s)  # ceil(ceil((P - s) / 2) / s)
        with torch.autocast(x.device.type, enabled=False):
            tiles, grid, (top, left) = self._tiles(x, extra)
            recon = self._untile(self._unproject(self._project(tiles)), grid)  # (N, 1, Hp, Wp)
        h, w = x.shape[-2:]
        return recon[..., top : top + h, left : left + w].to(x.dtype)
