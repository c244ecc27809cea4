"""A pretrained encoder with a small fully convolutional classifier head.

The autoencoder learned what EM looks like from unlabeled data; a few hundred labeled patches
then only have to teach a small head which features mean which artifact::

    x (N, 1, H, W) -> backbone.features -> f (N, C, h, w)
                   -> average over a window of the patch's cells -> (N, C, h', w')
                      (pooling="levels": mean and std of every encoder level over the
                      patch's window instead -> (N, 2 x all level channels, h', w'))
                   -> standardize with the training features' mean and std
                   [-> concatenate extra numeric features, broadcast -> (N, C + F, h', w')]
                   -> 1x1 conv -> LeakyReLU -> dropout -> 1x1 conv -> logits (N, K, h', w')

On a patch of the training size the window is the whole feature map (``h' = w' = 1``): one class
vector per patch. On a larger image the same window slides one cell at a time, so each output
cell holds what the classifier says about the patch there: a dense map of class probabilities at
``1 / downsample_factor`` of the input resolution, computed in one pass. It equals classifying
each patch alone up to the encoder's padding (in the map, a patch's border cells see the
patch's true surroundings rather than padding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emae.errors import EmaeError
from emae.models.pooling import (
    Pooling,
    check_pooling,
    global_features,
    level_statistics,
    pooled_channels,
    window_mean,
)
from emae.models.residual import context_of


class EncoderClassifier(nn.Module):
    """Classifier head on the features of an autoencoder.

    Parameters
    ----------
    backbone
        A registered autoencoder (anything with ``features(x) -> (N, C, h, w)``,
        ``feature_channels`` and ``downsample_factor``); only its features are used.
    n_classes
        Number of classes K.
    patch_size
        Side of the training patches; sets the pooling window (``patch_size / m`` cells).
    hidden
        Channels of the hidden 1x1 convolution.
    dropout
        Dropout rate before the last 1x1 convolution.
    n_extra
        Number of extra numeric features per sample (the labels CSV's ``feat_*`` columns),
        concatenated to the pooled features.
    pooling
        ``"latent"``: the mean of the backbone's features (its latent map) over the patch;
        ``"levels"``: the mean and standard deviation of every encoder level (from the
        full-resolution stem to the latent) over the patch, so the head also sees fine texture
        (needs a backbone with an ``encoder`` exposing ``levels``).

    Attributes
    ----------
    frozen : bool
        Whether the backbone is frozen: no gradients, and BatchNorm statistics kept in eval
        mode even while the head trains.
    feature_mean, feature_std : Tensor
        ``(C,)`` buffers standardizing the pooled features before the head (0 and 1 until
        :meth:`set_feature_statistics`), so the head's learning rate suits any encoder.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        n_classes: int,
        patch_size: int,
        hidden: int = 64,
        dropout: float = 0.1,
        n_extra: int = 0,
        pooling: Pooling = "latent",
    ) -> None:
        super().__init__()
        if n_classes < 2:
            raise EmaeError(f"a classifier needs at least 2 classes, got {n_classes}")
        m = int(backbone.downsample_factor)
        if patch_size < m or patch_size % m:
            raise EmaeError(
                f"patch_size must be a positive multiple of the encoder's downsampling {m}, "
                f"got {patch_size}"
            )
        check_pooling(backbone, pooling)
        self.backbone = backbone
        self.pooling = pooling
        self.n_classes = n_classes
        self.patch_size = patch_size
        self.n_extra = n_extra
        self.window = patch_size // m
        self.downsample_factor = m
        channels = pooled_channels(backbone, pooling)
        self.head = nn.Sequential(
            nn.Conv2d(channels + n_extra, hidden, 1),
            nn.LeakyReLU(0.2),
            nn.Dropout(dropout),
            nn.Conv2d(hidden, n_classes, 1),
        )
        self.frozen = False
        self.context = context_of(backbone)
        self.register_buffer("feature_mean", torch.zeros(channels))
        self.register_buffer("feature_std", torch.ones(channels))

    @property
    def input_size(self) -> int:
        """Side of the inputs of :meth:`forward`: the patch and the context its backbone's
        autoencoder sees on every side (:mod:`emae.models.residual`; most backbones have none)."""
        return self.patch_size + 2 * self.context

    def set_feature_statistics(self, pooled: Tensor) -> EncoderClassifier:
        """Standardize with the mean and std of pooled training features ``(N, C)``."""
        std = pooled.float().std(dim=0)
        self.feature_mean.copy_(pooled.float().mean(dim=0))
        self.feature_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))
        return self

    def freeze(self, frozen: bool = True) -> EncoderClassifier:
        """Freeze (or unfreeze) the backbone; returns ``self``."""
        self.frozen = frozen
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)
        return self

    def train(self, mode: bool = True) -> EncoderClassifier:
        """Train mode for the head; the backbone stays in eval mode while frozen."""
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def pooled_features(self, x: Tensor, window: int | None = None) -> Tensor:
        """Backbone features averaged over the patch window: ``(N, C, h', w')``.

        ``window=None`` averages over the patch size's window with stride 1 (a dense map on
        large inputs); a patch of the training size gives ``(N, C, 1, 1)``.
        """
        k = self.window if window is None else window
        if self.pooling == "levels":
            return level_statistics(self.backbone, x, k)
        f = self.backbone.features(x)  # (N, C, h, w)
        k = min(k, f.shape[-2], f.shape[-1])
        return window_mean(f.float(), k, 1)

    def logits_from_features(self, pooled: Tensor, extra: Tensor | None = None) -> Tensor:
        """Head on pooled ``(N, C, h', w')`` features (+ extra ``(N, F)``): ``(N, K, h', w')``."""
        mean = self.feature_mean.to(pooled)[None, :, None, None]
        pooled = (pooled - mean) / self.feature_std.to(pooled)[None, :, None, None]
        if self.n_extra:
            if extra is None or extra.shape != (pooled.shape[0], self.n_extra):
                got = None if extra is None else tuple(extra.shape)
                raise EmaeError(
                    f"this classifier takes {self.n_extra} extra features per sample, got {got}"
                )
            tiled = extra.to(pooled)[:, :, None, None].expand(-1, -1, *pooled.shape[-2:])
            pooled = torch.cat([pooled, tiled], dim=1)
        return self.head(pooled)

    def dense_logits(self, x: Tensor, extra: Tensor | None = None) -> Tensor:
        """Logits of the patch centred at every feature cell: ``(N, K, h', w')``.

        A backbone with context gets ``x`` reflect-padded by it, so the cells cover ``x``.
        """
        c = self.context
        if c:
            x = F.pad(x, (c, c, c, c), mode="reflect" if min(x.shape[-2:]) > c else "replicate")
        return self.logits_from_features(self.pooled_features(x), extra)

    def forward(self, x: Tensor, extra: Tensor | None = None) -> Tensor:
        """One logit vector per input: ``(N, 1, H, W) -> (N, K)``, pooled over the whole input."""
        return self.logits_from_features(self.global_features(x), extra)[:, :, 0, 0]

    def global_features(self, x: Tensor) -> Tensor:
        """What the head sees of each whole input, before standardizing: ``(N, C, 1, 1)``."""
        return global_features(self.backbone, x, self.pooling)

    def dense_probabilities(self, x: Tensor, extra: Tensor | None = None) -> Tensor:
        """Softmax of :meth:`dense_logits`: ``(N, K, h', w')`` float32 summing to 1 over K
        (the softmax in float32 also under bf16 autocast)."""
        return torch.softmax(self.dense_logits(x, extra).float(), dim=1)
