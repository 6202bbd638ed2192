"""Reading image files: one policy for the import, training, evaluation, conversion and the device.

Image files lie about what they are: WebP or PNG saved as ``.jpg``, names such as
``x.jpg_1088Wx1632H``, RGBA and palette PNGs, phone photos whose pixels are stored sideways with an
EXIF orientation tag. Every reader in the project therefore follows the same rules, written here
once: decode by content (never by name), apply the EXIF orientation, and return plain RGB uint8
(transparency composited on white, as a viewer shows it; 16-bit and float scaled to 8-bit).

OpenCV decodes first, everywhere: ``cv2.imdecode`` sniffs the format and applies EXIF orientation,
and alpha is composited here. It needs about half Pillow's peak memory for a large JPEG (a
4000x3000 photo: +75 MB against +121 MB), which matters to a daemon replaying photos under a
300 MB memory limit. What OpenCV cannot decode goes to Pillow where it is installed (the
workstation; the more tolerant decoder for scraped datasets). Both give identical pixels for the
JPEGs the project writes.

A file that cannot be decoded raises :class:`DecodeError` (a ``ValueError``) with a short
machine-readable ``reason`` (``empty``, ``not_an_image``, ``truncated``, ``corrupt``,
``too_large``, ``unreadable``), so an import can count skipped files by reason and say why.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL.Image import Image as PilImage

#: File name endings of images. Only a hint: content decides, and names such as
#: ``x.jpg_1088Wx1632H`` still count as images (see :func:`looks_like_image`).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}
)


class DecodeError(ValueError):
    """A file that is not a usable image; ``reason`` is one short word for counting."""

    def __init__(self, reason: str, detail: str, path: Path | str | None = None):
        super().__init__(f"{path}: not a usable image ({reason}: {detail})" if path else f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.path = path


def looks_like_image(path: Path | str) -> bool:
    """Named like an image (an image suffix anywhere in the name; hidden files never): worth decoding."""
    name = Path(path).name.lower()
    return not name.startswith(".") and any(suffix in name for suffix in IMAGE_SUFFIXES)


def list_images(folder: Path) -> list[Path]:
    """Every file below ``folder`` named like an image, sorted; content decides later."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and looks_like_image(p))


def read_rgb(path: Path | str) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB; FileNotFoundError or DecodeError naming the file otherwise."""
    path = Path(path)
    try:
        data = path.read_bytes()  # not cv2.imread: it fails on non-ASCII paths on some platforms
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except OSError as exc:
        raise DecodeError("unreadable", f"cannot read ({exc.strerror or exc})", path) from None
    try:
        return decode_rgb(data)
    except DecodeError as exc:
        raise DecodeError(exc.reason, exc.detail, path) from None


def decode_rgb(data: bytes) -> np.ndarray:
    """Encoded image bytes as HxWx3 uint8 RGB: OpenCV, then Pillow (where installed) for what
    OpenCV cannot decode; the same rules either way."""
    try:
        return _opencv_decode(data)
    except DecodeError as opencv_error:
        try:
            import PIL  # noqa: F401
        except ImportError:  # no Pillow (the Pi): OpenCV's verdict stands
            raise opencv_error from None
    return np.asarray(pil_decode(data)[0], dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# Pillow (workstation): the import also needs the Pillow image itself, to hash and re-encode it
# --------------------------------------------------------------------------------------------


def pil_decode(data: bytes) -> tuple[PilImage, str]:
    """Decode image bytes to an RGB Pillow image (EXIF orientation applied) and the detected format."""
    im, fmt = pil_open(data)
    return pil_to_rgb(pil_orient(im)), fmt


def pil_open(data: bytes) -> tuple[PilImage, str]:
    """Decode by content (pixels loaded, nothing converted yet); DecodeError says why not."""
    from PIL import Image, UnidentifiedImageError

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


def pil_orient(im: PilImage) -> PilImage:
    """Apply the EXIF orientation tag (pixels as a viewer shows them); a broken EXIF is ignored."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not cost us the pixels
        return im


def pil_to_rgb(im: PilImage) -> PilImage:
    """Any Pillow mode -> RGB. Alpha is composited on white; 16-bit and float are scaled to 8-bit."""
    from PIL import Image

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


# --------------------------------------------------------------------------------------------
# OpenCV (the Pi, where Pillow is not installed)
# --------------------------------------------------------------------------------------------


def _opencv_decode(data: bytes) -> np.ndarray:
    import cv2

    if not data:
        raise DecodeError("empty", "empty file (0 bytes)")
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        if _may_have_alpha(data):
            # IMREAD_UNCHANGED keeps the alpha (every other flag applies the EXIF orientation too).
            raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
            if raw is not None and raw.ndim == 3 and raw.shape[2] == 4:
                return _on_white(cv2.cvtColor(_to_uint8(raw), cv2.COLOR_BGRA2RGBA))
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # 8-bit, 3 channels, EXIF orientation applied
    except cv2.error as exc:
        raise DecodeError("corrupt", str(exc).strip().splitlines()[-1]) from None
    if bgr is None or bgr.size == 0:
        raise DecodeError("not_an_image", "content is not a recognised image format (or is corrupt)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _may_have_alpha(data: bytes) -> bool:
    """PNG, WebP, TIFF or GIF by their magic bytes (JPEG and BMP, the usual case, cannot)."""
    return (data[:8] == b"\x89PNG\r\n\x1a\n" or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
            or data[:4] in (b"II*\x00", b"MM\x00*") or data[:4] == b"GIF8")


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return np.round(pixels / 257.0).astype(np.uint8)
    top = float(pixels.max()) if pixels.size else 0.0
    scale = 255.0 if top <= 1.0 else 255.0 / top
    return np.clip(np.round(pixels.astype(np.float32) * scale), 0, 255).astype(np.uint8)


def _on_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA composited on a white background, as a viewer shows a transparent image."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.round(rgb).astype(np.uint8)
