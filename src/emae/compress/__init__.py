"""Learned compression: chunk bitstreams, the codec that makes them, the container that holds them.

:mod:`emae.compress.bitstream` entropy codes integer latents with fixed tables;
:mod:`emae.compress.coder` turns image chunks into bitstreams and back with a trained
:class:`~emae.models.codec.Codec`; :mod:`emae.compress.container` reads and writes the chunked
container of ``emae compress``.
"""

from emae.compress.bitstream import CorruptChunk, decode_symbols, encode_symbols
from emae.compress.coder import ChunkCoder

__all__ = ["ChunkCoder", "CorruptChunk", "decode_symbols", "encode_symbols"]
