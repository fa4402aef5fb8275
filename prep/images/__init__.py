"""Image files to pixels: ``decode`` (the one way prep turns a file into RGB pixels) and
``jpeg_header`` (a JPEG's size from its first bytes, with no dependencies).

``prep.images.load_rgb_at_side`` and the other names of ``prep.images.decode`` stay
reachable from here, as the plugin guide once named them; plugins take
``prep.load_rgb_at_side``.
"""

from typing import Any

# Images of more pixels are refused as decompression bombs, by the split checks and the
# decoder alike: Pillow refuses images above twice its MAX_IMAGE_PIXELS (89,478,485).
DEFAULT_MAX_PIXELS = 2 * 89_478_485


def __getattr__(name: str) -> Any:
    import importlib

    decode = importlib.import_module("prep.images.decode")
    try:
        return getattr(decode, name)
    except AttributeError:
        raise AttributeError(f"module 'prep.images' has no attribute {name!r}") from None
