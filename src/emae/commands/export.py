"""Export a trained model folder as one ONNX file, for Fiji/deepImageJ, ilastik or onnxruntime.

The folder's intensity normalization is in the graph, so it takes raw pixels (cast to float32)::

    autoencoder  raw (N, 1, H, W) -> reconstruction (N, 1, H, W)  normalized units
                                  -> squared_error  (N, 1, H, W)  (x - reconstruction)**2
    classifier   raw (N, 1, P, P) -> probabilities  (N, K)        softmax, K = len(classes)

with ``x = (raw - low_value) / (high_value - low_value)`` in float32 (clipped to [0, 1] if the
normalizer clips), as :class:`~emae.data.normalization.PercentileNormalizer` computes it. The
anomaly score and threshold are *not* in the graph: ``squared_error`` is what the ``"pixel"`` score
smooths; the other scores need statistics only emae applies (``emae detect``). VAEs export their
deterministic path, the decoded posterior mean, as emae scores them.

N is dynamic. Spatial-latent conv-ae, denoising-ae, vae and beta-vae take any ``H, W >= m``
(``m = 2**len(channels)``): traced on a size that needs padding, the graph pads to multiples of
m and crops back as the model does. PCA takes any ``H, W >= min_size`` (in the metadata), as
equivalent convolutions. Vector-latent models and classifiers take ``P x P`` patches only.

Exporter: TorchScript (``dynamo=False``). It needs only ``onnx``, traces the run-time size
arithmetic of padding and cropping, and exports every registered model. The ``torch.export``
one needs ``onnxscript``, fails on PCA (a data-dependent check) and silently fixed the padding
branch, giving wrong reconstructions of sizes that are not multiples of m. torch deprecates the
TorchScript exporter: revisit when it goes. Every export is checked before it is written:
onnxruntime must reproduce the folder's model on random raw inputs of two batch sizes (and two
image sizes where H, W are free). Left out: a bioimage.io folder (rdf.yaml, test tensors).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import emae
from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError
from emae.folders.autoencoder import load_bundle
from emae.folders.classifier import is_classifier, load_classifier
from emae.io.atomic import atomic_file, check_writable, write_errors
from emae.io.provenance import check_not_input
from emae.models import model_spec
from emae.models.pca import PCAAutoencoder

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
#: Opsets the TorchScript exporter writes.
OPSETS = range(13, 21)
#: The graph must reproduce the model within ``ATOL * max(1, max |output|)`` (float32 rounding).
ATOL = 1e-4
#: Metadata key that marks a file emae exported (:func:`is_emae_onnx`).
KIND_KEY = "emae.kind"
KIND = "an ONNX model exported by emae"


def is_emae_onnx(path: str | Path) -> bool:
    """Whether ``path`` is an ONNX file emae wrote (the only file ``overwrite`` replaces)."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size >= 2**31:  # protobuf's limit: not ours
            return False
        proto = onnx.ModelProto.FromString(path.read_bytes())
    except (OSError, DecodeError):
        return False
    return any(p.key == KIND_KEY for p in proto.metadata_props)


class _PCAConvolutions(nn.Module):
    """:class:`PCAAutoencoder` as convolutions (its ``len(x)`` and ``col2im`` do not export).

    Projecting ``P x P`` tiles at stride s is a strided convolution with the components as
    kernels; decoding and folding them back, and the overlap count, are transposed convolutions.
    The tile grid is ``PCAAutoencoder._grid`` with non-negative operands only (the exporter
    truncates ``//`` of negative sizes) and reflect padding only, so ``H, W >= min_size``.
    """

    def __init__(self, pca: PCAAutoencoder) -> None:
        super().__init__()
        pca._check_fitted()
        p, k, s = pca.patch_size, pca.n_components, pca.stride
        v, mu = pca.components.float(), pca.mean.float()  # (k, P*P), (P*P,)
        self.register_buffer("encode_w", v.reshape(k, 1, p, p))
        self.register_buffer("encode_b", -(v @ mu))  # z = V (t - mu)
        self.register_buffer("decode_w", torch.cat([v, mu[None]]).reshape(k + 1, 1, p, p))
        self.register_buffer("count_w", torch.ones(1, 1, p, p))
        self.patch_size, self.stride = p, s
        self.extra = -(-((p - s + 1) // 2) // s)  # tiles past the border, as pca.forward
        n = 4 * (p + s)  # pads are below 2 (P + s): reflect works on any larger size
        while n > 1 and max(self.pads(n - 1, self.extra)) < n - 1:
            n -= 1
        self.min_size = n

    def pads(self, size: Any, extra: int) -> tuple[Any, Any]:
        """Padding before and after an axis of ``size`` pixels (traced in export)."""
        p, s = self.patch_size, self.stride
        cells = (size + s - 1) // s
        before = (p - s) // 2 + (cells * s - size) // 2 + extra * s
        return before, (cells + 2 * extra - 1) * s + p - size - before

    def _encode(self, x: torch.Tensor, extra: int) -> tuple[torch.Tensor, Any, Any]:
        """Coefficients ``(N, k, rows, cols)`` of the tiles, and the top and left padding."""
        (top, bottom), (left, right) = self.pads(x.shape[-2], extra), self.pads(x.shape[-1], extra)
        x = F.pad(x, (left, right, top, bottom), mode="reflect")  # (N, 1, Hp, Wp)
        return F.conv2d(x, self.encode_w, self.encode_b, stride=self.stride), top, left

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``PCAAutoencoder.features``: ``(N, 1, H, W) -> (N, k, ceil(H/s), ceil(W/s))``."""
        return self._encode(x, 0)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``PCAAutoencoder.forward``: ``(N, 1, H, W) -> (N, 1, H, W)``."""
        h, w = x.shape[-2], x.shape[-1]
        z, top, left = self._encode(x, self.extra)  # (N, k, rows, cols)
        ones = torch.ones_like(z[:, :1])  # (N, 1, rows, cols)
        total = F.conv_transpose2d(torch.cat([z, ones], 1), self.decode_w, stride=self.stride)
        count = F.conv_transpose2d(ones, self.count_w, stride=self.stride)
        return (total / count)[..., top : top + h, left : left + w]


class _Graph(nn.Module):
    """The exported function: normalization, then the model (see the module docstring)."""

    def __init__(self, model: nn.Module, normalizer: PercentileNormalizer, kind: str) -> None:
        super().__init__()
        self.model, self.kind, self.clip = model, kind, normalizer.clip
        low, high = np.float32(normalizer.low_value), np.float32(normalizer.high_value)
        self.register_buffer("low", torch.tensor(low))
        self.register_buffer("scale", torch.tensor(high - low))  # float32, as the normalizer

    def forward(self, raw: torch.Tensor) -> Any:
        x = (raw - self.low) / self.scale
        x = x.clamp(0.0, 1.0) if self.clip else x
        if self.kind == "classifier":
            return torch.softmax(self.model(x).float(), dim=1)  # (N, K)
        recon = self.model(x)  # (N, 1, H, W)
        return recon, (x - recon) ** 2


@dataclass(frozen=True)
class _Plan:
    """The graph, two check sizes ``(H, W)`` (traced on the first), output names, emae's own
    ``raw -> outputs`` to check against, the normalizer and the metadata."""

    graph: _Graph
    sizes: list[tuple[int, int]]
    outputs: list[str]
    reference: Callable[[np.ndarray], list[np.ndarray]]
    normalizer: PercentileNormalizer
    metadata: dict[str, str]


def _autoencoder(path: Path) -> _Plan:
    bundle = load_bundle(path)
    model, norm = bundle.model.eval(), bundle.normalizer
    if isinstance(model, PCAAutoencoder):
        core = _PCAConvolutions(model)
        low, spatial = core.min_size, f"any H, W >= {core.min_size}"
        sizes = [(low + 3, low + 6), (low + 10, low + 1)]
    elif model.latent == "spatial":
        core, low = model, model.downsample_factor
        spatial = f"any H, W >= {low} (padded to multiples of {low} inside the graph)"
        sizes = [(2 * low + 1, 3 * low - 1), (3 * low, 2 * low)]  # traced on one that pads
    else:
        core, low = model, model.patch_size
        spatial, sizes = f"{low}x{low} patches only (vector latent)", [(low, low)] * 2

    def reference(raw: np.ndarray) -> list[np.ndarray]:
        x = torch.from_numpy(norm(raw))
        with torch.no_grad():
            recon = model(x)
        return [recon.numpy(), ((x - recon) ** 2).numpy()]

    mean = " (decoded from the posterior mean)" if model_spec(bundle.model_name).variational else ""
    outputs = (
        f"reconstruction: (N, 1, H, W) in normalized units{mean}; squared_error: (N, 1, H, W), "
        "(normalized input - reconstruction)**2, unsmoothed. The anomaly score "
        "(emae.anomaly.scores) "
        "and the threshold are not in the graph"
    )
    metadata = {
        KIND_KEY: "autoencoder",
        "emae.model": bundle.model_name,
        "emae.model_kwargs": json.dumps(bundle.model_kwargs),
        "emae.min_size": str(low),
        "emae.anomaly.scores": json.dumps(bundle.scoring),
        "emae.input": f"raw: (N, 1, H, W) float32 raw intensities, {spatial}",
        "emae.outputs": outputs,
    }
    graph = _Graph(core, norm, "autoencoder")
    return _Plan(graph, sizes, ["reconstruction", "squared_error"], reference, norm, metadata)


def _classifier(path: Path) -> _Plan:
    fitted = load_classifier(path)
    if fitted.feature_names:
        raise EmaeError(
            f"{path}: this classifier also takes the feature columns "
            f"{', '.join(fitted.feature_names)}; only classifiers of image patches alone can be "
            "exported to ONNX"
        )
    model, p = fitted.model.eval(), fitted.model.input_size
    if isinstance(model.backbone, PCAAutoencoder):  # only its features are used
        model = copy.deepcopy(model)  # the reference keeps the original
        model.backbone = _PCAConvolutions(fitted.model.backbone)
    metadata = {
        KIND_KEY: "classifier",
        "emae.model": fitted.backbone_name,
        "emae.model_kwargs": json.dumps(fitted.backbone_kwargs),
        "emae.classes": json.dumps(list(fitted.classes)),
        "emae.patch_size": str(p),
        "emae.input": f"raw: (N, 1, {p}, {p}) float32 raw intensities",
        "emae.outputs": "probabilities: (N, K) softmax, columns in the order of emae.classes",
    }
    return _Plan(
        _Graph(model, fitted.normalizer, "classifier"),
        [(p, p)] * 2,
        ["probabilities"],
        lambda raw: [fitted.predict_proba(raw[:, 0])],
        fitted.normalizer,
        metadata,
    )


def _export(plan: _Plan, example: np.ndarray, opset: int, where: Path) -> bytes:
    axes = {0: "N", 2: "H", 3: "W"} if plan.sizes[0] != plan.sizes[1] else {0: "N"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the size arithmetic is traced on purpose
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        try:
            torch.onnx.export(
                plan.graph.eval(),
                (torch.from_numpy(example),),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=["raw"],
                output_names=plan.outputs,
                dynamic_axes={name: axes for name in ["raw", *plan.outputs]},
            )
        except (RuntimeError, TypeError, ValueError) as exc:
            first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
            raise EmaeError(f"{where}: torch could not export the model to ONNX: {first}") from None
    return buffer.getvalue()


def _check(data: bytes, plan: _Plan, inputs: list[np.ndarray], where: Path) -> float:
    """Largest ``|onnxruntime - emae|`` over all outputs and inputs; an error past tolerance."""
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    worst, scale = 0.0, 1.0
    for raw in inputs:
        try:
            outputs = session.run(None, {"raw": raw})
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            raise EmaeError(
                f"{where}: the exported graph fails in onnxruntime on input {raw.shape} "
                f"({str(exc).splitlines()[0]}); nothing written"
            ) from None
        for got, want in zip(outputs, plan.reference(raw), strict=True):
            same = got.shape == want.shape
            worst = max(worst, float(np.abs(got - want).max()) if same else float("inf"))
            scale = max(scale, float(np.abs(want).max()))
    if not worst <= ATOL * scale:
        raise EmaeError(
            f"{where}: the exported graph differs from the model by {worst:.3g} (more than "
            f"{ATOL * scale:.3g}) on random inputs; nothing written"
        )
    return worst


def export_onnx(
    model_dir: str | Path, out: str | Path, *, overwrite: bool = False, opset: int = DEFAULT_OPSET
) -> dict[str, Any]:
    """Write a trained model folder as one checked ONNX file (graph: the module docstring).

    Parameters
    ----------
    model_dir
        An autoencoder folder (``emae pretrain``) or a classifier folder (``emae finetune``).
    out
        The ``.onnx`` file to write, atomically; not inside ``model_dir``.
    overwrite
        Replace an existing ``.onnx`` file that emae exported (nothing else is replaced).
    opset
        ONNX opset, 13 to 20; 17 (the default) runs in onnxruntime >= 1.13.

    Returns
    -------
    dict
        ``path``, ``opset``, ``max_abs_diff`` (largest ``|onnxruntime - emae|`` on the check
        inputs) and the metadata stored in the file (``emae.kind``, ``emae.input``, ...).

    Raises
    ------
    EmaeError
        For a bad folder, output or opset, a classifier with extra feature columns, missing
        ``onnx``/``onnxruntime``, or a graph that does not reproduce the model.
    """
    model_dir, out = Path(model_dir), Path(out)
    if out.suffix != ".onnx":
        raise EmaeError(f"the output must be an .onnx file, got {out}")
    if opset not in OPSETS:
        raise EmaeError(f"opset must be {OPSETS[0]} to {OPSETS[-1]}, got {opset!r}")
    try:
        import onnx
        import onnxruntime  # noqa: F401  (_check runs the graph)
    except ImportError as exc:
        raise EmaeError(
            f"ONNX export needs onnx and onnxruntime ({exc}); pip install 'emae[onnx]'"
        ) from None
    check_not_input(out, [model_dir])
    check_writable(out, overwrite=overwrite, replaceable=is_emae_onnx, kind=KIND)
    plan = _classifier(model_dir) if is_classifier(model_dir) else _autoencoder(model_dir)
    lo, hi = plan.normalizer.low_value, plan.normalizer.high_value
    rng = np.random.default_rng(0)  # raw intensities, a quarter of the range beyond both ends
    inputs = [
        rng.uniform(lo - (hi - lo) / 4, hi + (hi - lo) / 4, (n, 1, h, w)).astype(np.float32)
        for n, (h, w) in zip((2, 3), plan.sizes, strict=True)
    ]
    data = _export(plan, inputs[0], opset, model_dir)
    difference = _check(data, plan, inputs, model_dir)
    formula = "x = (raw - low_value) / (high_value - low_value)"
    metadata = {
        **plan.metadata,
        "emae.version": emae.__version__,
        "emae.source": model_dir.resolve().name,
        "emae.data.normalization": json.dumps(plan.normalizer.to_dict()),
        "emae.normalization_formula": formula + ", clipped to [0, 1]" * plan.normalizer.clip,
    }
    proto = onnx.load_from_string(data)
    onnx.helper.set_model_props(proto, metadata)
    proto.producer_name, proto.producer_version = "emae", emae.__version__
    proto.doc_string = f"{metadata['emae.input']} -> {metadata['emae.outputs']}"
    onnx.checker.check_model(proto)
    with (
        write_errors(out),
        atomic_file(out, overwrite=overwrite, replaceable=is_emae_onnx, kind=KIND) as tmp,
    ):
        onnx.save(proto, str(tmp))
    logger.info("exported %s to %s (max difference %.2g)", model_dir, out, difference)
    return {"path": str(out), "opset": opset, "max_abs_diff": difference, **metadata}
