"""A classifier backbone that sees what a pretrained autoencoder could not reconstruct.

An autoencoder trained on unlabeled EM reconstructs normal tissue and fails on artifacts, so its
residual ``x - decoder(encoder(x))`` keeps the artifact and drops most of the tissue texture
that a classifier would otherwise have to learn to ignore from a few labels::

    x (N, 1, P + 2c, P + 2c) -> x - autoencoder(x)            (frozen, eval mode, no gradients)
                             -> crop the context c on every side -> (N, 1, P, P)
                             -> backbone.features                 (trained on the labels)

The autoencoder sees ``c`` pixels of the patch's surroundings (``context``) so that it
reconstructs the patch's border from real tissue rather than from its zero padding; the
classifier then looks only at the patch. On a whole image the caller pads the image by ``c``
(:meth:`emae.models.classifier.EncoderClassifier.dense_logits` does), so the residual covers the
image exactly. ``docs/benchmarks.md`` ("Few labels: sample data") measures it against the CNN
from scratch on the image.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emae.errors import EmaeError

#: The backbone name a classifier folder records for this module.
RESIDUAL = "residual"


class ResidualBackbone(nn.Module):
    """A trainable backbone on the residual of a frozen autoencoder.

    Parameters
    ----------
    autoencoder, autoencoder_kwargs
        Registry name and arguments of the pretrained autoencoder (its weights are loaded by
        the caller, e.g. from the pretraining folder, or with the classifier's).
    backbone_kwargs
        Arguments of the ``conv-ae`` whose encoder is trained on the residual.
    context
        Pixels of surroundings on every side of a patch that only the autoencoder sees.
    with_image
        Give the trained backbone the patch itself as a second channel beside the residual
        (its ``conv-ae`` then takes ``in_channels=2``).

    Attributes
    ----------
    feature_channels, downsample_factor
        Those of the trained backbone (what :class:`EncoderClassifier` needs).
    """

    def __init__(
        self,
        autoencoder: str,
        autoencoder_kwargs: dict[str, Any],
        backbone_kwargs: dict[str, Any],
        context: int = 16,
        with_image: bool = False,
    ) -> None:
        super().__init__()
        from emae.models.registry import build_model, model_spec

        spec = model_spec(autoencoder)
        if spec.inpainting or spec.codec:
            raise EmaeError(
                f"a residual classifier needs an autoencoder of the image alone; {autoencoder!r} "
                "is an inpainting model or a codec"
            )
        if isinstance(context, bool) or not isinstance(context, int) or context < 0:
            raise EmaeError(f"context must be an int >= 0 pixels, got {context!r}")
        self.autoencoder = build_model(autoencoder, **autoencoder_kwargs)
        self.autoencoder.requires_grad_(False).eval()
        inputs = {"in_channels": 2} if with_image else {}
        self.backbone = build_model("conv-ae", **{**backbone_kwargs, **inputs})
        self.context = context
        self.with_image = bool(with_image)
        self.feature_channels = int(self.backbone.feature_channels)
        self.downsample_factor = int(self.backbone.downsample_factor)
        self._multiple = int(getattr(self.autoencoder, "downsample_factor", 1))

    def train(self, mode: bool = True) -> ResidualBackbone:
        """Train mode for the backbone; the autoencoder always stays in eval mode."""
        super().train(mode)
        self.autoencoder.eval()
        return self

    def residual(self, x: Tensor) -> Tensor:
        """``x - autoencoder(x)`` without the context border: ``(N, 1, H - 2c, W - 2c)``.

        Inputs whose sides are not a multiple of the autoencoder's downsampling are
        reflect-padded at the bottom and right for its forward pass, then cropped back.
        """
        c = self.context
        h, w = x.shape[-2:]
        if min(h, w) <= 2 * c:
            raise EmaeError(f"input {h}x{w} is not larger than twice the context {c}")
        k = self._multiple
        pad_h, pad_w = -h % k, -w % k
        with torch.no_grad():
            padded = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else x
            recon = self.autoencoder(padded)[..., :h, :w]
        r = x - recon.to(x.dtype)
        return r[..., c : h - c, c : w - c]

    def backbone_input(self, x: Tensor) -> Tensor:
        """What the trained backbone sees: the residual, beside the patch when ``with_image``."""
        r = self.residual(x)
        if self.with_image:
            c = self.context
            r = torch.cat([x[..., c : x.shape[-2] - c, c : x.shape[-1] - c], r], dim=1)
        return r

    def features(self, x: Tensor) -> Tensor:
        """The trained backbone's features of :meth:`backbone_input`: ``(N, C, h, w)``."""
        return self.backbone.features(self.backbone_input(x))

    @property
    def encoder(self) -> _Levels:
        """The trained backbone's encoder levels, of :meth:`backbone_input` (for the head's
        ``pooling="levels"``)."""
        return _Levels(self)


class _Levels:
    """``levels`` and ``level_channels`` of a residual backbone's trained encoder."""

    def __init__(self, owner: ResidualBackbone) -> None:
        self.owner = owner

    def levels(self, x: Tensor) -> list[tuple[Tensor, int]]:
        return self.owner.backbone.encoder.levels(self.owner.backbone_input(x))

    def level_channels(self) -> int:
        return int(self.owner.backbone.encoder.level_channels())


def build_backbone(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """A classifier's backbone from the name and arguments its folder records."""
    if name == RESIDUAL:
        return ResidualBackbone(**kwargs)
    from emae.models.registry import build_model

    return build_model(name, **kwargs)


def context_of(backbone: nn.Module) -> int:
    """Pixels of surroundings a backbone's input carries on every side (0 for most)."""
    return int(getattr(backbone, "context", 0))
