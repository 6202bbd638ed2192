"""Image decoding for dataset import: by content, never by file name.

Scraped datasets lie about their files: WebP or PNG saved as ``.jpg``, names such as
``x.jpg_1088Wx1632H``, RGBA and palette PNGs, phone photos whose pixels are stored sideways with an
EXIF orientation tag. Everything downstream (training, the device) sees plain RGB, so the
differences are settled here once: Pillow sniffs the format from the bytes, EXIF orientation is
applied, and every mode becomes RGB (transparency composited on white, as a viewer shows it).

A file that cannot be decoded raises :class:`DecodeError` with a short machine-readable ``reason``
(``empty``, ``not_an_image``, ``truncated``, ``corrupt``, ``too_large``) so an import can skip it,
count it by reason and say why.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from train.data.suffixes import IMAGE_SUFFIXES  # noqa: F401 - re-exported: the import's name for it

#: JPEG quality of every image an import writes: high enough that re-encoding adds no artefacts
#: a classifier could learn from, small enough for thousands of face crops.
JPEG_QUALITY = 95


class DecodeError(ValueError):
    """A file that is not a usable image; ``reason`` is one short word for counting."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode(data: bytes) -> tuple[Image.Image, str]:
    """Decode image bytes to an RGB image (EXIF orientation applied) and the detected format."""
    im, fmt = open_image(data)
    return to_rgb(orient(im)), fmt


def open_image(data: bytes) -> tuple[Image.Image, str]:
    """Decode by content (pixels loaded, nothing converted yet); DecodeError says why not."""
    if not data:
        raise DecodeError("empty", "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # A decompression-bomb *warning* (between 89 and 179 Mpx) is not an error for us.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            fmt = im.format or "unknown"
            im.load()
    except UnidentifiedImageError:
        raise DecodeError("not_an_image", "content is not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise DecodeError("too_large", str(exc)) from None
    except OSError as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise DecodeError(reason, str(exc) or type(exc).__name__) from None
    except (SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as exc:
        # Pillow's plugins signal malformed headers and streams with all of these.
        raise DecodeError("corrupt", f"{type(exc).__name__}: {exc}") from None
    if im.width < 1 or im.height < 1:
        raise DecodeError("corrupt", f"image has no pixels ({im.width}x{im.height})")
    return im, fmt


def orient(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag (pixels as a viewer shows them); a broken EXIF is ignored."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not cost us the pixels
        return im


def decode_file(path: Path) -> tuple[Image.Image, str]:
    return decode(Path(path).read_bytes())


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB. Alpha is composited on white; 16-bit and float are scaled to 8-bit."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        arr = np.asarray(im, dtype=np.float32)
        top = float(arr.max()) if arr.size else 0.0
        if im.mode == "F" and top <= 1.0:
            arr = arr * 255.0
        elif top > 255.0:
            arr = arr / 257.0 if top <= 65535.0 else arr * (255.0 / top)
        im = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode in ("LA", "La", "PA", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "L" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        white = Image.new("RGB", im.size, (255, 255, 255))
        white.paste(im, mask=im.getchannel("A"))
        return white
    return im.convert("RGB")


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
