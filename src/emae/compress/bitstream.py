"""Entropy coding of integer latents with fixed probability tables (constriction's ANS coder).

Integer symbols are coded with fixed tables ``pmf`` ``(T, 2R + 2)``: by default symbol ``(c, ...)``
with table ``pmf[c]`` (a latent ``(M, h, w)`` with the per-channel tables of
:class:`emae.models.entropy.FactorizedDensity`), or with the table each symbol's index picks (the
Gaussian tables of the hyperprior codec, :mod:`emae.models.hyperprior`). Symbols ``-R .. R`` map to
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

import itertools
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


def _rows(shape: tuple[int, ...], rows: np.ndarray | None) -> np.ndarray:
    """The table of each symbol, flat: ``rows`` or, by default, its channel (first axis)."""
    if rows is not None:
        if rows.shape != tuple(shape):
            raise EmaeError(f"table indices of shape {rows.shape} for symbols of shape {shape}")
        return rows.reshape(-1).astype(np.int64)
    return np.repeat(np.arange(shape[0]), int(np.prod(shape[1:], dtype=np.int64)))


def _groups(table: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of the runs of equal values of a sorted ``table``."""
    if not table.size:
        return []
    starts = np.flatnonzero(np.r_[True, table[1:] != table[:-1]])
    return list(itertools.pairwise([*starts.tolist(), table.size]))


def _model(pmf: np.ndarray, row: int) -> object:
    p = np.ascontiguousarray(pmf[row], np.float64)
    return _constriction().stream.model.Categorical(p, perfect=False)


def encode_symbols(symbols: np.ndarray, pmf: np.ndarray, rows: np.ndarray | None = None) -> bytes:
    """Code integer ``symbols`` (any shape) with the tables ``pmf`` ``(T, 2R + 2)``: bytes.

    ``rows`` (same shape as ``symbols``) picks each symbol's table; by default the symbol's
    channel, the first axis (``T`` = channels). Symbols are coded table by table in ascending
    order, each table's in C order.
    """
    c = _constriction()
    radius = (pmf.shape[1] - 2) // 2
    table = _rows(symbols.shape, rows)
    if table.size and (table.min() < 0 or table.max() >= pmf.shape[0]):
        raise EmaeError(f"table indices outside 0..{pmf.shape[0] - 1}")
    values = symbols.astype(np.int64).reshape(-1)
    order = np.argsort(table, kind="stable")  # grouped by table, C order within each
    values, table = values[order], table[order]
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
    for a, b in reversed(_groups(table)):
        coder.encode_reverse(indices[a:b], _model(pmf, int(table[a])))
    body = coder.get_compressed().astype("<u4").tobytes()
    return _HEADER.pack(MAGIC, zlib.crc32(body)) + body


def decode_symbols(
    data: bytes, pmf: np.ndarray, shape: tuple[int, ...], rows: np.ndarray | None = None
) -> np.ndarray:
    """Decode bytes of :func:`encode_symbols` into integer symbols of ``shape`` (int32), with
    the same ``pmf`` and ``rows``.

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
    table = _rows(tuple(shape), rows)
    order = np.argsort(table, kind="stable")
    sorted_table = table[order]
    coder = c.stream.stack.AnsCoder(np.frombuffer(body, "<u4").astype(np.uint32))
    indices = np.empty(table.size, np.int64)
    for a, b in _groups(sorted_table):
        indices[a:b] = coder.decode(_model(pmf, int(sorted_table[a])), b - a)
    values = indices - radius
    escaped = indices == 2 * radius + 1
    if escaped.any():
        words = coder.decode(c.stream.model.Uniform(_HALF), 2 * int(escaped.sum()))
        words = words.astype(np.int64).reshape(-1, 2)
        values[escaped] = (words[:, 0] << 16) + words[:, 1] - (1 << 31)
    out = np.empty(table.size, np.int64)
    out[order] = values
    return out.reshape(shape).astype(np.int32)
