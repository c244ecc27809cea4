"""Entropy coding of integer latents with fixed probability tables (constriction's ANS coder).

A chunk's latent is an integer array ``(M, h, w)``; channel ``c`` is coded with the table
``pmf[c]`` of :class:`emae.models.entropy.FactorizedDensity`: symbols ``-R .. R`` map to
``0 .. 2R``, anything else to the escape symbol ``2R + 1`` followed by the value itself as two
16-bit uniform symbols. The tables are float64 numbers stored with the model; constriction turns
each into an exactly invertible fixed-point distribution by the same integer algorithm on every
run, so encoding and decoding depend on the integers and the stored tables alone: the same
symbols give the same bytes, on every run and machine.

Layout of a chunk's bytes: ``b"EMC1"``, the CRC-32 of the rest (little-endian uint32), then the
coder's 32-bit words. A truncated or altered chunk fails the CRC and raises
:class:`CorruptChunk`, so it is reported instead of decoded into noise.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from emae.errors import EmaeError

MAGIC = b"EMC1"
_HEADER = struct.Struct("<4sI")
#: Escaped values are stored as two 16-bit symbols of ``value + 2**31``.
_HALF = 1 << 16


class CorruptChunk(EmaeError):
    """A chunk's bytes are truncated or altered (bad magic or CRC)."""


def _constriction():
    try:
        import constriction
    except ImportError:
        raise EmaeError(
            "compression needs the 'constriction' package: pip install 'emae[compress]'"
        ) from None
    return constriction


def _models(pmf: np.ndarray) -> list:
    model = _constriction().stream.model
    return [model.Categorical(np.ascontiguousarray(p, np.float64), perfect=False) for p in pmf]


def encode_symbols(symbols: np.ndarray, pmf: np.ndarray) -> bytes:
    """Code an integer latent ``(M, h, w)`` with the tables ``pmf`` ``(M, 2R + 2)``: bytes."""
    c = _constriction()
    radius = (pmf.shape[1] - 2) // 2
    if symbols.ndim != 3 or symbols.shape[0] != pmf.shape[0]:
        raise EmaeError(f"expected a latent of {pmf.shape[0]} channels, got {symbols.shape}")
    values = symbols.astype(np.int64).reshape(symbols.shape[0], -1)
    escaped = np.abs(values) > radius
    indices = np.where(escaped, 2 * radius + 1, values + radius).astype(np.int32)
    coder = c.stream.stack.AnsCoder()
    # A stack: what is decoded last is encoded first.
    payload = values[escaped] + (1 << 31)
    if payload.size:
        if payload.min() < 0 or payload.max() >= 1 << 32:
            raise EmaeError("a latent value does not fit in 32 bits; the model diverged")
        words = np.stack([payload >> 16, payload & (_HALF - 1)], axis=1).ravel().astype(np.int32)
        coder.encode_reverse(words, c.stream.model.Uniform(_HALF))
    for channel, model in zip(indices[::-1], _models(pmf)[::-1], strict=True):
        coder.encode_reverse(channel, model)
    body = coder.get_compressed().astype("<u4").tobytes()
    return _HEADER.pack(MAGIC, zlib.crc32(body)) + body


def decode_symbols(data: bytes, pmf: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Decode bytes of :func:`encode_symbols` into the integer latent ``shape`` ``(M, h, w)``,
    int32.

    Raises
    ------
    CorruptChunk
        When the bytes are truncated or altered.
    """
    c = _constriction()
    radius = (pmf.shape[1] - 2) // 2
    if len(data) < _HEADER.size or (len(data) - _HEADER.size) % 4:
        raise CorruptChunk(f"a chunk of {len(data)} bytes is truncated")
    magic, crc = _HEADER.unpack_from(data)
    body = data[_HEADER.size :]
    if magic != MAGIC or zlib.crc32(body) != crc:
        raise CorruptChunk("a chunk's bytes fail their checksum (truncated or altered)")
    coder = c.stream.stack.AnsCoder(np.frombuffer(body, "<u4").astype(np.uint32))
    n = shape[1] * shape[2]
    indices = np.stack([coder.decode(model, n) for model in _models(pmf)])  # (M, n)
    values = indices.astype(np.int64) - radius
    escaped = indices == 2 * radius + 1
    if escaped.any():
        words = coder.decode(c.stream.model.Uniform(_HALF), 2 * int(escaped.sum()))
        words = words.astype(np.int64).reshape(-1, 2)
        values[escaped] = (words[:, 0] << 16) + words[:, 1] - (1 << 31)
    return values.reshape(shape).astype(np.int32)
