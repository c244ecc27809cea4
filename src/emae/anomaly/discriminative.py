"""The ``"discriminative"`` score: a segmenter of artifacts reading image and reconstruction.

The other scores decide from statistics of normal data alone, and miss what the autoencoder
reconstructs as well as tissue: a thin scratch looks like a membrane. DRAEM (Zavrtanik et
al., ICCV 2021) adds a discriminative network trained on anomalies drawn onto normal images.
:class:`DiscriminativeHead` does that on top of the frozen autoencoder: a small U-Net
(:class:`emae.models.unet.UNet`, two input channels) reads the normalized image and the
autoencoder's reconstruction and returns a logit per pixel, trained with focal loss on crops
of normal patches onto which :func:`emae.train.drawn_artifacts.draw_artifacts` drew artifacts
of ``kinds``. By default the map adds the autoencoder's typicality map (the default score),
each standardized on normal patches kept out of the segmenter's training, so that what the
segmenter never learned is still found where typicality finds it; larger = more anomalous::

    recon = autoencoder(x)
    anomaly = z(head([x, recon])) + z(typicality(x, recon))          (N, H, W) float32

A segmenter trained on drawn artifacts finds drawn artifacts; the question is how much of that
carries over to kinds it never saw, so the benchmark holds kinds out of training and reports
them apart (docs/benchmarks.md, "Real EM": a head that never saw rings or horseshoes finds
them at 0.98 pixel AUROC, where typicality reaches 0.88-0.94; stripes, unseen, fall to 0.65
alone and 0.82 with typicality added). Both maps come from one forward pass of the
autoencoder.

The head's weights and settings round-trip exactly through :meth:`to_arrays` and
:meth:`from_arrays` into the model folder's ``scoring.safetensors`` (no pickle).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from emae.anomaly.maps import as_images, batched_apply
from emae.anomaly.statistics import _check_fitted, _take
from emae.anomaly.typicality import TypicalityStatistics
from emae.errors import EmaeError
from emae.models.inference import inference_copy
from emae.models.unet import UNet
from emae.runtime import model_device, select_precision
from emae.synth.artifacts import ARTIFACT_TYPES
from emae.train.drawn_artifacts import check_kinds, train_segmenter


def make_head(channels: Sequence[int]) -> UNet:
    """The segmenter: a U-Net from (image, reconstruction) ``(B, 2, H, W)`` to logits
    ``(B, 1, H, W)``, batch norm (local at inference, any tile size)."""
    channels = tuple(int(c) for c in channels)
    return UNet(in_channels=2, channels=channels, latent_channels=channels[-1], out_channels=1)


class DiscriminativeHead:
    """A segmenter of drawn artifacts on (image, reconstruction); anomaly = its logit.

    Parameters
    ----------
    kinds
        Artifact kinds drawn during training (default: all of
        :data:`emae.synth.artifacts.ARTIFACT_TYPES`).
    steps, batch_size, crop, lr
        Training: ``steps`` AdamW batches of ``batch_size`` random ``crop``-pixel crops of the
        patches given to :meth:`fit`, flipped and rotated; ``crop=None`` takes the patches
        whole (:func:`emae.train.autoencoder.fit_detector` draws 128-pixel patches for this
        score).
    share
        Fraction of the crops that get an artifact.
    reference_side
        Pixels that the kinds' relative sizes refer to: the side of the images to be mapped
        (see :func:`emae.train.drawn_artifacts.draw_artifacts`).
    channels
        Feature channels of the U-Net's levels, one level per entry. Four levels (the
        default) see about twice as far as three, which is what finds long thin scratches
        (docs/benchmarks.md, "Real EM": 0.76-0.79 against 0.70 pixel AUROC; a fifth level, a
        wider network, line-filter inputs or longer training crops did not help).
    seed
        Of the crops, the drawn artifacts and the initial weights.
    combine
        Add the autoencoder's typicality map to the segmenter's, each standardized by its
        mean and standard deviation on normal patches kept out of training: kinds the
        segmenter was never shown are still found where typicality finds them (measured with
        kinds held out: stripes 0.65 alone, 0.82 combined). ``False``: the segmenter alone.
    train_precision
        Of training: ``"auto"`` (bf16 autocast where the device supports it natively),
        ``"bf16"`` or ``"fp32"``. Maps are computed in the precision :meth:`anomaly_map` is
        given.

    Attributes
    ----------
    head_ : UNet
        The trained segmenter, eval mode.
    typicality_ : TypicalityStatistics
        The typicality score of the same autoencoder, fitted on the training patches.
    scale_ : numpy.ndarray
        ``(4,)`` float64: mean and standard deviation of the segmenter's logit and of the
        typicality map on the held-out normal patches.
    losses_ : list of float
        The training loss per step (not stored in the model folder).
    """

    _PREFIX = "discriminative"
    _FITTED = "head_"
    _NAMES = ("kinds", "channels", "reference_side", "combine", "scale")

    def __init__(
        self,
        *,
        kinds: Sequence[str] = ARTIFACT_TYPES,
        steps: int = 800,
        batch_size: int = 16,
        crop: int | None = None,
        lr: float = 2e-3,
        share: float = 0.5,
        reference_side: float = 512.0,
        channels: Sequence[int] = (16, 32, 64, 128),
        seed: int = 0,
        train_precision: str = "auto",
        combine: bool = True,
    ) -> None:
        self.kinds = kinds
        self.steps = steps
        self.batch_size = batch_size
        self.crop = crop
        self.lr = lr
        self.share = share
        self.reference_side = reference_side
        self.channels = channels
        self.seed = seed
        self.train_precision = train_precision
        self.combine = combine

    def _check_params(self) -> None:
        check_kinds(self.kinds)
        for name in ("steps", "batch_size", "crop"):
            value = getattr(self, name)
            if name == "crop" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EmaeError(f"{name} must be a positive int, got {value!r}")
        if self.train_precision not in ("auto", "bf16", "fp32"):
            raise EmaeError(
                f"train_precision must be auto, bf16 or fp32, got {self.train_precision!r}"
            )
        if not 0.0 < self.share <= 1.0:
            raise EmaeError(f"share must be a fraction in (0, 1], got {self.share!r}")
        if not (self.lr > 0 and self.reference_side > 0):
            raise EmaeError(
                f"lr and reference_side must be > 0, got {self.lr!r} and {self.reference_side!r}"
            )

    def fit(
        self,
        model: nn.Module,
        patches: Any,
        *,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        precision: str = "fp32",
    ) -> DiscriminativeHead:
        """Train the segmenter on artifacts drawn onto normal ``patches`` ``(N, H, W)``
        (normalized float32, N >= 2, ``H, W >= crop``), then fit typicality on the same
        patches and both maps' standardization on a quarter of them kept out of training.

        ``batch_size``, ``device`` and ``precision`` are those of the scoring passes; the
        segmenter trains with :attr:`batch_size` and :attr:`train_precision`.
        """
        self._check_params()
        patches = as_images(patches, "patches")
        if len(patches) < 2:
            raise EmaeError(f"fit needs at least 2 normal patches, got {len(patches)}")
        device = model_device(model) if device is None else torch.device(device)
        order = np.random.default_rng(self.seed).permutation(len(patches))
        calibration, training = np.split(patches[order], [max(1, len(patches) // 4)])
        head = make_head(self.channels)
        self.losses_ = train_segmenter(
            model,
            head,
            training,
            kinds=self.kinds,
            steps=self.steps,
            batch_size=self.batch_size,
            crop=self.crop or min(patches.shape[1:]),
            lr=self.lr,
            share=self.share,
            reference_side=self.reference_side,
            seed=self.seed,
            device=device,
            precision=self.train_precision,
        )
        head = head.cpu().eval()
        typicality = TypicalityStatistics().fit(
            model, training, batch_size=batch_size, device=device, precision=precision
        )
        parts = self._maps(model, calibration, batch_size, device, precision, head, typicality)
        scale = []
        for i in (0, 1):  # (N, 2, H, W): the head's logits, then typicality
            scale += [parts[:, i].mean(dtype=np.float64), parts[:, i].std(dtype=np.float64)]
        self.head_, self.typicality_ = head, typicality
        self.scale_ = np.maximum(np.array(scale), [-np.inf, 1e-12, -np.inf, 1e-12])
        return self

    def _maps(
        self,
        model: nn.Module,
        x: np.ndarray,
        batch_size: int,
        device: str | torch.device | None,
        precision: str,
        head: nn.Module,
        typicality: TypicalityStatistics,
        scale: np.ndarray | None = None,
    ) -> np.ndarray:
        """The map of :meth:`anomaly_map` ``(N, H, W)`` standardized by ``scale``, or with
        ``scale=None`` both raw maps, the head's logits and typicality: ``(N, 2, H, W)``."""
        device = model_device(model) if device is None else torch.device(device)
        amp = select_precision(device, precision)
        fused = inference_copy(head).to(device)

        def both(inputs: Tensor, recon: Tensor) -> Tensor:
            with torch.autocast(device.type, amp, enabled=amp is not None):
                logits = fused(torch.cat([inputs, recon], dim=1))[:, 0].float()
            typical = typicality._map(inputs[:, 0], recon[:, 0])
            if scale is None:
                return torch.stack([logits, typical], dim=1)
            mean_h, std_h, mean_t, std_t = (float(v) for v in scale)
            z = (logits - mean_h) / std_h
            return z + (typical - mean_t) / std_t if self.combine else z

        return batched_apply(
            model,
            "forward",
            as_images(x),
            batch_size=batch_size,
            device=device,
            precision=precision,
            then=both,
        )

    def anomaly_map(
        self,
        model: nn.Module,
        x: Any,
        *,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        precision: str = "fp32",
    ) -> np.ndarray:
        """The anomaly map of ``x`` ``(N, H, W)`` normalized: the segmenter's standardized
        logit plus (``combine``) the standardized typicality, ``(N, H, W)`` float32."""
        _check_fitted(self, self._FITTED)
        return self._maps(
            model, x, batch_size, device, precision, self.head_, self.typicality_, self.scale_
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Settings, weights and statistics as named arrays (exact) for ``scoring.safetensors``."""
        _check_fitted(self, self._FITTED)
        p = self._PREFIX
        arrays = {
            f"{p}.kinds": np.array([k in self.kinds for k in ARTIFACT_TYPES], np.uint8),
            f"{p}.channels": np.array(self.channels, np.int64),
            f"{p}.reference_side": np.array(self.reference_side, np.float64),
            f"{p}.combine": np.array(self.combine, np.uint8),
            f"{p}.scale": np.asarray(self.scale_, np.float64),
            **self.typicality_.to_arrays(),
        }
        for name, value in self.head_.state_dict().items():
            arrays[f"{p}.head.{name}"] = value.detach().cpu().numpy().copy()
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> DiscriminativeHead:
        """A fitted head from :meth:`to_arrays` output; gives identical anomaly maps."""
        kinds, channels, reference_side, combine, scale = _take(arrays, cls._PREFIX, cls._NAMES)
        if (
            kinds.shape != (len(ARTIFACT_TYPES),)
            or channels.ndim != 1
            or not channels.size
            or scale.shape != (4,)
        ):
            raise EmaeError(
                f"discriminative arrays: kinds {kinds.shape}, channels {channels.shape} and "
                f"scale {scale.shape} should be ({len(ARTIFACT_TYPES)},), a non-empty (D,) "
                f"and (4,)"
            )
        stats = cls(
            kinds=tuple(k for k, on in zip(ARTIFACT_TYPES, kinds, strict=True) if on),
            channels=tuple(int(c) for c in channels),
            reference_side=float(reference_side),
            combine=bool(combine),
        )
        head = make_head(stats.channels)
        prefix = f"{cls._PREFIX}.head."
        state = {
            k[len(prefix) :]: torch.from_numpy(np.array(v))
            for k, v in arrays.items()
            if k.startswith(prefix)
        }
        try:
            head.load_state_dict(state)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0]
            raise EmaeError(f"discriminative arrays do not fit the head: {first}") from None
        stats.head_ = head.eval()
        stats.typicality_ = TypicalityStatistics.from_arrays(arrays)
        stats.scale_ = scale.astype(np.float64)
        return stats
