"""What the dataset import does with decoded images: re-encode, hash, identify.

Decoding itself follows the project's one policy in :mod:`device.images` (by content, EXIF
orientation, RGB); the import works on the Pillow images it returns.
"""

from __future__ import annotations

import hashlib
import io

from PIL import Image


#: JPEG quality of every image an import writes: high enough that re-encoding adds no artefacts
#: a classifier could learn from, small enough for thousands of face crops.
JPEG_QUALITY = 95


def encode_jpeg(im: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def phash_hex(im: Image.Image) -> str:
    """64-bit DCT perceptual hash as 16 hex digits (imagehash's phash, its string form)."""
    import imagehash

    return str(imagehash.phash(im))


def pixels_sha256(im: Image.Image) -> str:
    """Identity of decoded pixels (size included), for crops that have no file of their own."""
    h = hashlib.sha256(f"{im.mode}:{im.width}x{im.height}:".encode())
    h.update(im.tobytes())
    return h.hexdigest()
