"""The one way prep turns an image file into RGB pixels, for statistics and training alike.

Reading the same way in both places is the point: normalisation statistics computed on
pixels that training never sees are wrong. Every image is returned as an ``H x W x 3``
``uint8`` array in RGB order, with:

* EXIF orientation applied (a phone photo stored sideways comes out upright);
* grayscale (``L``, ``1``) replicated to three channels;
* palette images expanded (through RGBA when the palette has transparency);
* alpha dropped (``RGBA``, ``LA``): the stored colour of each pixel is kept, as
  torchvision's ``default_loader`` does;
* ``CMYK`` converted with Pillow's conversion;
* 16-bit images (``I;16``, ``I``) scaled to 8 bits by ``round(v / 257)``, so 65535 -> 255.

Plain RGB and grayscale JPEGs, the vast majority, are decoded by OpenCV (libjpeg-turbo),
measured 30% faster than Pillow here, from the bytes of a single read; everything else
(and any JPEG that looks truncated, so that it fails loudly instead of coming out grey)
goes through Pillow. Both apply the EXIF orientation.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from prep.errors import PrepError
from prep.images import DEFAULT_MAX_PIXELS
from prep.images.jpeg_header import ends_with_eoi, jpeg_frame_header


class ImageDecodeError(PrepError):
    """An image file could not be decoded."""


def _pil_to_rgb_array(image) -> np.ndarray:
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    # A copy: Pillow's array view is read-only, and torch warns about (and cannot write to) those.
    return np.array(image)


def _reduction_factor(width: int, height: int, min_side: int | None, max_reduction: int = 8) -> int:
    """The largest JPEG DCT scale (1, 2, 4, 8) that keeps the short side >= min_side."""
    if not min_side:
        return 1
    short = min(width, height)
    for factor in (8, 4, 2):
        if factor <= max_reduction and short // factor >= min_side:
            return factor
    return 1


_CV2_REDUCED = {2: "IMREAD_REDUCED_COLOR_2", 4: "IMREAD_REDUCED_COLOR_4", 8: "IMREAD_REDUCED_COLOR_8"}


class DecodedImage(NamedTuple):
    pixels: np.ndarray  # H x W x 3 uint8, RGB, upright
    width: int  # as stored in the file, before orientation or reduction
    height: int
    mode: str  # Pillow's mode of the file (RGB, L, P, CMYK, I;16 ...)
    format: str | None  # JPEG, PNG ...


def load_rgb(path: str | os.PathLike, min_side: int | None = None) -> np.ndarray:
    """Decode an image as RGB ``uint8`` (see the module docstring for the conversions).

    Args:
        path: the image file.
        min_side: when given, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale in the
            DCT domain, as long as its short side stays at least this long. Much cheaper
            than decoding fully and resizing, and as accurate for a later downscale.

    Raises:
        ImageDecodeError: the file is missing, truncated or not an image, with the reason.
    """
    return decode_image(path, min_side).pixels


def load_rgb_at_side(path: str | os.PathLike, side: int | None) -> np.ndarray:
    """Decode an image for training: its short side brought down to ``side`` (never up),
    at the lowest cost: a JPEG is decoded at the smallest DCT scale that keeps at least
    ``side`` pixels, then resized to exactly ``side`` (``shrink_to_side``). ``None``: full resolution.

    Every pixel training sees comes from here, cached or not, so a decoded cache holds
    exactly what decoding would give (see ``prep.data.cache``).

    Raises:
        ImageDecodeError: as for ``load_rgb``.
    """
    return shrink_to_side(load_rgb(path, side), side)


def shrunk_size(width: int, height: int, side: int | None) -> tuple[int, int]:
    """``(width, height)`` of an image of that size after ``shrink_to_side``."""
    if side is None or min(width, height) <= side:
        return width, height
    if height <= width:
        return max(side, round(width * side / height)), side
    return side, max(side, round(height * side / width))


# What ``shrink_to_side`` resamples images with; part of every decoded cache's key, so that
# a store made another way is never served as if made this way.
SHRINK_RESAMPLING = "bilinear below 2x, area from 2x"


def shrink_to_side(pixels: np.ndarray, side: int | None, interpolation: str = "image") -> np.ndarray:
    """``pixels`` resized so that the short side is ``side``, the aspect ratio kept; as they
    are when already that small. ``interpolation``: ``image`` (see ``SHRINK_RESAMPLING``), or
    ``nearest`` for masks (a mask never gains a value it did not have)."""
    height, width = pixels.shape[:2]
    size = shrunk_size(width, height, side)
    if size == (width, height):
        return pixels
    import cv2

    if interpolation == "nearest":
        flag = cv2.INTER_NEAREST
    elif min(height, width) < 2 * side:
        # After a reduced-scale decode the factor is always below 2. There bilinear reads
        # every input pixel and is as close to a Lanczos resize of the full photo as area
        # averaging (measured 34.9 against 34.5 dB at 1.34x), at a fifth of the cost: 0.4
        # against 2.1 ms for 800 x 600, a third of the whole sample's time.
        flag = cv2.INTER_LINEAR
    else:  # bilinear would skip pixels and alias (31.4 against 37.9 dB at 2.7x)
        flag = cv2.INTER_AREA
    return cv2.resize(pixels, size, interpolation=flag)


def decode_image(path: str | os.PathLike, min_side: int | None = None, max_reduction: int = 8) -> DecodedImage:
    """``load_rgb``, plus what the file's header says (one read for both).

    ``max_reduction`` caps the DCT scale-down (2 decodes at exactly half scale when the
    image is large enough); the other arguments and errors are as for ``load_rgb``.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ImageDecodeError(f"{path}: {exc.strerror or exc}") from None
    if data[:3] == b"\xff\xd8\xff" and ends_with_eoi(data):
        header = jpeg_frame_header(data)
        if header is not None and header.components in (1, 3):
            return _decode_plain_jpeg(path, data, header, min_side, max_reduction)
    return _decode_with_pillow(path, data, min_side, max_reduction)


def _decode_plain_jpeg(path, data: bytes, header, min_side: int | None, max_reduction: int) -> DecodedImage:
    """The common case, through OpenCV from the bytes already read (EXIF applied)."""
    import cv2

    if header.width * header.height > DEFAULT_MAX_PIXELS:  # Pillow's limit, for both paths
        raise ImageDecodeError(f"{path}: {header.width}x{header.height} pixels is a decompression bomb")
    factor = _reduction_factor(header.width, header.height, min_side, max_reduction)
    flag = getattr(cv2, _CV2_REDUCED[factor]) if factor > 1 else cv2.IMREAD_COLOR
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if pixels is None:
        raise ImageDecodeError(f"{path}: not a decodable JPEG")
    mode = "L" if header.components == 1 else "RGB"
    return DecodedImage(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB), header.width, header.height, mode, "JPEG")


def _decode_with_pillow(path, data: bytes, min_side: int | None, max_reduction: int) -> DecodedImage:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            header = (*image.size, image.mode, image.format)
            factor = _reduction_factor(*image.size, min_side, max_reduction)
            if factor > 1 and image.format == "JPEG":
                image.draft(image.mode, (image.size[0] // factor, image.size[1] // factor))
            image.load()
            return DecodedImage(_pil_to_rgb_array(image), *header)
    except Image.UnidentifiedImageError:  # its message names an anonymous BytesIO, not the file
        raise ImageDecodeError(f"{path}: not an image (its bytes are in no format Pillow reads)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"{path}: {exc}") from None
