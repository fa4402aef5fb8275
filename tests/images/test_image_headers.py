"""The quick check's header reading agrees with Pillow's, and catches bombs in every format
it reads sizes from."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from prep.split.checks import Reason, image_size, probe_file, sniff_format

from conftest import write


def encoded(fmt: str, size: tuple[int, int], **options) -> bytes:
    pixels = np.random.default_rng(sum(size)).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def pillow_size(data: bytes) -> tuple[int, int]:
    """The size Pillow reads, with its bomb limit lifted (it only reads the header here)."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        return Image.open(io.BytesIO(data)).size
    finally:
        Image.MAX_IMAGE_PIXELS = limit


@pytest.mark.parametrize("size", [(1, 1), (127, 64), (64, 127), (300, 7), (1025, 513)])
@pytest.mark.parametrize(("fmt", "options"), [
    ("JPEG", {}), ("PNG", {}), ("GIF", {}), ("BMP", {}),
    ("WEBP", {"lossless": True}), ("WEBP", {"quality": 50}), ("WEBP", {"exif": b"Exif\0\0"}),
])
def test_sizes_from_headers_match_pillow(fmt: str, options: dict, size: tuple[int, int]) -> None:
    data = encoded(fmt, size, **options)
    assert image_size(sniff_format(data), data) == pillow_size(data)


def os2_bmp(width: int, height: int) -> bytes:
    """An OS/2 1.x BMP (12-byte BITMAPCOREHEADER, 16-bit sizes), 24 bits per pixel."""
    row = (width * 3 + 3) // 4 * 4
    pixels = bytes(row * height)
    header = struct.pack("<IHHHH", 12, width, height, 1, 24)
    offset = 14 + len(header)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + header + pixels


def info_bmp(width_field: int, height_field: int) -> bytes:
    """A BITMAPINFOHEADER BMP with raw 32-bit size fields and no pixel data (a bomb's shape)."""
    header = struct.pack("<IIIHHIIiiII", 40, width_field, height_field, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + header


@pytest.mark.parametrize("size", [(127, 64), (64, 127), (1, 1)])
def test_os2_bmps_are_read_as_pillow_reads_them_and_accepted(tmp_path, size: tuple[int, int]) -> None:
    data = os2_bmp(*size)
    assert pillow_size(data) == size
    assert image_size("BMP", data) == size
    assert probe_file(str(write(tmp_path / "a.bmp", data))).reason is None


@pytest.mark.parametrize(("width_field", "height_field"), [
    (0xFFFFFF80, 64),  # 4,294,967,168 x 64: 274 gigapixels, 128 pixels wide if read as signed
    (524_288, 524_288),
    (1024, (-524_288) & 0xFFFFFFFF),  # a top-down (negative) height
])
def test_bmp_bombs_are_caught_as_pillow_would_size_them(tmp_path, width_field: int, height_field: int) -> None:
    data = info_bmp(width_field, height_field)
    dims = image_size("BMP", data)
    assert dims == pillow_size(data)
    probe = probe_file(str(write(tmp_path / "bomb.bmp", data)))
    assert probe.reason == Reason.BOMB, probe


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "WEBP", "JPEG"])
def test_bombs_are_caught_in_every_format_sized_from_its_header(tmp_path, fmt: str) -> None:
    data = encoded(fmt, (200, 100))
    assert probe_file(str(write(tmp_path / f"x.{fmt.lower()}", data)), max_pixels=200 * 100 - 1).reason == Reason.BOMB
    assert probe_file(str(write(tmp_path / f"y.{fmt.lower()}", data)), max_pixels=200 * 100).reason is None
