"""Image chunks to bitstreams and back, with a trained :class:`~emae.models.codec.Codec`.

A :class:`ChunkCoder` codes one 2-D region at a time, independently of every other (so any
region of a container decodes from its own chunks): the raw region is normalized with the
model's :class:`~emae.data.normalization.PercentileNormalizer`, padded to a multiple of the
model's down-sampling factor, transformed, rounded to integers and entropy coded
(:mod:`emae.compress.bitstream`). Decoding inverts each step and returns float32 values in the
input's intensity units; the caller casts them into the stored dtype.

The forward passes run in float32 (bf16 would change the rounded latent). Decoding is
deterministic for a given model, bitstream and machine: the symbols come from integer
arithmetic only, and the synthesis transform is a fixed sequence of float32 operations on them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emae.compress.bitstream import CorruptChunk, decode_symbols, encode_symbols
from emae.data.normalization import PercentileNormalizer
from emae.errors import EmaeError
from emae.models.codec import Codec
from emae.models.hyperprior import HyperpriorCodec, gaussian_tables, scale_indices

_LENGTH = struct.Struct("<I")


@dataclass
class ChunkCoder:
    """Codes raw regions ``(h, w)`` with a trained codec.

    Attributes
    ----------
    model
        The codec, with its coding tables
        (:meth:`emae.models.entropy.FactorizedDensity.update_tables`).
    normalizer
        Its intensity normalization.
    device
        Of the forward passes.
    """

    model: Codec
    normalizer: PercentileNormalizer
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not isinstance(self.model, Codec):
            raise EmaeError(
                f"a {type(self.model).__name__} is not a codec; train one with "
                "`emae pretrain --model codec`"
            )
        if not self.model.entropy.has_tables:
            raise EmaeError("this codec has no coding tables; it was saved before training ended")
        self.model.eval()
        self._pmf = self.model.entropy.pmf.cpu().numpy()
        hyper = isinstance(self.model, HyperpriorCodec)
        self._exact = self.model.exact_synthesis() if hyper else None

    @classmethod
    def from_folder(cls, path: str | Path) -> ChunkCoder:
        """The coder of a model folder of ``emae pretrain --model codec``."""
        from emae.folders.autoencoder import load_bundle

        bundle = load_bundle(path)
        if not isinstance(bundle.model, Codec):
            raise EmaeError(
                f"{path}: its model {bundle.model_name!r} is not a codec; train one with "
                "`emae pretrain --model codec`"
            )
        return cls(bundle.model, bundle.normalizer)

    def on(self, device: str) -> ChunkCoder:
        """This coder with its forward passes on ``device`` (the module moves)."""
        if device == self.device:
            return self
        return ChunkCoder(self.model.to(device), self.normalizer, device)

    def latent_shape(self, shape: tuple[int, int]) -> tuple[int, int, int]:
        """``(M, h', w')`` of the latent of a region ``(h, w)`` (padded to the model's
        multiple, then down-sampled by its latent factor)."""
        m, f = self.model.downsample_factor, self.model.latent_factor
        return (self.model.latent_channels, *(-(-s // m) * m // f for s in shape))

    def _gaussian(self, z: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Means (float64) and table indices of the latent, from the integer hyper-latent."""
        z_hat = torch.from_numpy(z)[None]
        means, scales = self.model.gaussian_parameters(z_hat, exact=self._exact)
        return means[0], scale_indices(scales[0]).numpy()

    @torch.no_grad()
    def encode(self, region: np.ndarray) -> bytes:
        """A raw region ``(h, w)`` of any real dtype -> its bitstream."""
        x = torch.from_numpy(self.normalizer(np.asarray(region)))[None, None]
        y = self.model.encode(x.to(self.device))
        if not isinstance(self.model, HyperpriorCodec):
            return encode_symbols(torch.round(y[0]).to(torch.int32).cpu().numpy(), self._pmf)
        z = torch.round(self.model.hyper_analysis(y)[0]).to(torch.int32).cpu().numpy()
        means, rows = self._gaussian(z)
        residual = torch.round(y[0].cpu().double() - means).to(torch.int32).numpy()
        side = encode_symbols(z, self._pmf)
        return _LENGTH.pack(len(side)) + side + encode_symbols(residual, gaussian_tables(), rows)

    @torch.no_grad()
    def decode(self, data: bytes, shape: tuple[int, int]) -> np.ndarray:
        """The bitstream of a region of ``shape = (h, w)`` -> float32 ``(h, w)``, raw units.

        Raises
        ------
        emae.compress.CorruptChunk
            When the bytes are truncated or altered.
        """
        latent = self.latent_shape(shape)
        if isinstance(self.model, HyperpriorCodec):
            if len(data) < _LENGTH.size or _LENGTH.unpack_from(data)[0] > len(data) - 4:
                raise CorruptChunk(f"a chunk of {len(data)} bytes is truncated")
            n = _LENGTH.unpack_from(data)[0]
            side, data = data[4 : 4 + n], data[4 + n :]
            z_shape = (self.model.hyper_channels, latent[1] // 4, latent[2] // 4)
            means, rows = self._gaussian(decode_symbols(side, self._pmf, z_shape))
            residual = decode_symbols(data, gaussian_tables(), latent, rows)
            y = (torch.from_numpy(residual).double() + means).float()
        else:
            y = torch.from_numpy(decode_symbols(data, self._pmf, latent).astype(np.float32))
        y_hat = y[None].to(self.device)
        x_hat = self.model.decode(y_hat)[0, 0, : shape[0], : shape[1]].cpu().numpy()
        norm = self.normalizer
        return x_hat * np.float32(norm.high_value - norm.low_value) + np.float32(norm.low_value)
