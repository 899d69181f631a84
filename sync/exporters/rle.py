"""Label Studio's brush RLE (thi.ng rle-pack over a flat RGBA image), and the two mask file
formats written without numpy or Pillow: 8-bit grayscale PNG and ``.npy``."""

from __future__ import annotations

import struct
import zlib

from sync.errors import InvalidInput


class RLEError(InvalidInput):
    """The RLE data is truncated or inconsistent."""


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.bits = "".join(f"{byte:08b}" for byte in data)
        self.at = 0

    def read(self, count: int) -> int:
        end = self.at + count
        if end > len(self.bits):
            raise RLEError("RLE data ends early")
        value = int(self.bits[self.at : end], 2)
        self.at = end
        return value


def decode(rle: list[int] | bytes) -> bytes:
    """The flat byte array an RLE encodes (RGBA: 4 bytes per pixel)."""
    try:
        bits = _Bits(bytes(rle))
    except (TypeError, ValueError) as exc:
        raise RLEError(f"RLE is not a list of bytes: {exc}") from None
    total = bits.read(32)
    word = bits.read(5) + 1
    sizes = [bits.read(4) + 1 for _ in range(4)]
    if word > 8:
        raise RLEError(f"RLE word size {word} (only 8-bit masks exist)")
    out = bytearray(total)
    i = 0
    while i < total:
        repeat = bits.read(1)
        end = i + 1 + bits.read(sizes[bits.read(2)])
        if end > total:
            raise RLEError("RLE run past the end of the image")
        if repeat:
            value = bits.read(word)
            out[i:end] = bytes([value]) * (end - i)
            i = end
        else:
            while i < end:
                out[i] = bits.read(word)
                i += 1
    return bytes(out)


def encode(flat: bytes) -> list[int]:
    """RLE of a flat byte array, bit for bit as label-studio-sdk's ``encode_rle`` writes it
    (word size 8, run-length widths 3/4/8/16)."""
    parts = [f"{len(flat):032b}", f"{7:05b}", "".join(f"{s - 1:04b}" for s in (3, 4, 8, 16))]
    i = 0
    while i < len(flat):
        j = i
        while j < len(flat) and flat[j] == flat[i]:
            j += 1
        parts.append(_run(j - i, flat[i]))
        i = j
    bits = "".join(parts)
    bits += "0" * (8 - len(bits) % 8)  # the sdk always pads, a whole byte when aligned
    return [int(bits[k : k + 8], 2) for k in range(0, len(bits), 8)]


def _run(length: int, value: int) -> str:
    if length == 1:
        return f"000000{value:08b}"
    if length <= 8:
        return f"100{length - 1:03b}{value:08b}"
    if length <= 16:
        return f"101{length - 1:04b}{value:08b}"
    if length <= 256:
        return f"110{length - 1:08b}{value:08b}"
    out = []
    while length > 2**16:
        out.append(f"111{2**16 - 1:016b}{value:08b}")
        length -= 2**16
    out.append(f"111{length - 1:016b}{value:08b}")
    return "".join(out)


def alpha_mask(flat_rgba: bytes, width: int, height: int) -> bytes:
    """The alpha channel of a decoded brush image: one byte per pixel, row by row."""
    if len(flat_rgba) != width * height * 4:
        raise RLEError(
            f"RLE holds {len(flat_rgba)} bytes, expected {width}x{height}x4 = {width * height * 4}"
        )
    return flat_rgba[3::4]


def png(mask: bytes, width: int, height: int) -> bytes:
    """An 8-bit grayscale PNG of a mask."""
    rows = b"".join(b"\0" + mask[r * width : (r + 1) * width] for r in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 6))
        + chunk(b"IEND", b"")
    )


def npy(mask: bytes, width: int, height: int) -> bytes:
    """A ``.npy`` file (format 1.0) holding the mask as a ``uint8`` array of shape (H, W)."""
    header = f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({height}, {width}), }}"
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * (pad % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + mask
