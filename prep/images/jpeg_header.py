"""Reading a JPEG's frame header from its first bytes, with no dependencies.

Shared by the split checks (which must start fast and import nothing heavy) and the
image decoder.
"""

from __future__ import annotations

from typing import NamedTuple

_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class FrameHeader(NamedTuple):
    width: int
    height: int
    components: int  # 1 grayscale, 3 YCbCr/RGB, 4 CMYK/YCCK


def jpeg_frame_header(data: bytes) -> FrameHeader | None:
    """Walk the marker segments to the frame header (SOFn); None if it is not in ``data``."""
    i, end = 2, len(data) - 10
    while i < end:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        elif marker in _SOF_MARKERS:
            height = (data[i + 5] << 8) | data[i + 6]
            width = (data[i + 7] << 8) | data[i + 8]
            return FrameHeader(width, height, data[i + 9])
        else:
            i += 2 + ((data[i + 2] << 8) | data[i + 3])
    return None


def ends_with_eoi(data: bytes) -> bool:
    """True when the end-of-image marker is in the last 32 bytes (trailers allowed)."""
    return b"\xff\xd9" in data[-32:]
