"""One image-reading policy (device.images): by content, EXIF orientation, RGB on white.

Every file here is made with OpenCV, so the same tests run in the Pi-like environment (no
Pillow: OpenCV decodes) and on the workstation (Pillow decodes; the OpenCV path is checked too).
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from device import images
from device.images import DecodeError, looks_like_image, read_rgb

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _have_pillow() -> bool:
    try:
        import PIL  # noqa: F401
    except ImportError:
        return False
    return True


#: Each decoder the environment has: the default (Pillow where installed) and OpenCV's.
DECODERS = [pytest.param(images.decode_rgb, id="default")]
if _have_pillow():
    DECODERS.append(pytest.param(images._opencv_decode, id="opencv"))


def _encode(rgb_or_rgba: np.ndarray, ext: str) -> bytes:
    code = cv2.COLOR_RGBA2BGRA if rgb_or_rgba.shape[2] == 4 else cv2.COLOR_RGB2BGR
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb_or_rgba, code))
    assert ok
    return buf.tobytes()


def _halves(h: int = 20, w: int = 40) -> np.ndarray:
    """Left half red, right half blue."""
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, : w // 2] = RED
    rgb[:, w // 2 :] = BLUE
    return rgb


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an APP1 EXIF block whose only tag is Orientation (what a phone writes)."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def _close(pixel: np.ndarray, colour: tuple[int, int, int], tol: int = 40) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - colour) <= tol))


@pytest.mark.parametrize("decode", DECODERS)
def test_decodes_by_content_whatever_the_name(decode, tmp_path):
    png = _encode(_halves(), ".png")
    (tmp_path / "photo.jpg").write_bytes(png)  # a PNG saved as .jpg
    rgb = decode((tmp_path / "photo.jpg").read_bytes())
    assert rgb.shape == (20, 40, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, _halves())  # lossless, and RGB (not BGR)


@pytest.mark.parametrize("decode", DECODERS)
def test_exif_orientation_is_applied(decode):
    jpeg = _with_exif_orientation(_encode(_halves(), ".jpg"), 6)  # 6: turn 90 degrees clockwise to view
    rgb = decode(jpeg)
    assert rgb.shape == (40, 20, 3)  # shown upright: taller than wide
    assert _close(rgb[5, 10], RED) and _close(rgb[35, 10], BLUE)  # the left (red) half is now on top


@pytest.mark.parametrize("decode", DECODERS)
def test_transparency_is_composited_on_white(decode):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., :3] = BLUE
    rgba[:, 5:, 3] = 255  # right half opaque blue, left half fully transparent
    rgb = decode(_encode(rgba, ".png"))
    assert rgb.shape == (10, 10, 3)
    assert (rgb[:, :5] == 255).all() and (rgb[:, 5:] == BLUE).all()


@pytest.mark.parametrize("decode", DECODERS)
def test_gray_and_16_bit_become_8_bit_rgb(decode):
    gray16 = np.full((6, 8), 257 * 200, np.uint16)
    ok, buf = cv2.imencode(".png", gray16)
    rgb = decode(buf.tobytes())
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8 and (np.abs(rgb.astype(int) - 200) <= 1).all()


@pytest.mark.parametrize("decode", DECODERS)
def test_bad_bytes_say_why(decode):
    with pytest.raises(DecodeError) as empty:
        decode(b"")
    assert empty.value.reason == "empty"
    with pytest.raises(DecodeError) as junk:
        decode(b"this is a text file, not an image")
    assert junk.value.reason in ("not_an_image", "corrupt")


def test_read_rgb_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg: no such file"):
        read_rgb(tmp_path / "missing.jpg")
    bad = tmp_path / "broken_café.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match=r"broken_café.jpg: not a usable image"):
        read_rgb(bad)
    good = tmp_path / "naïve.png"  # non-ASCII names work
    good.write_bytes(_encode(_halves(), ".png"))
    np.testing.assert_array_equal(read_rgb(good), _halves())


def test_one_suffix_list_and_names_that_hide_the_suffix():
    assert looks_like_image(Path("a/b.JPG")) and looks_like_image("x.jpg_1088Wx1632H")
    assert looks_like_image("scan.tiff") and looks_like_image("photo.webp")
    assert not looks_like_image("notes.txt") and not looks_like_image("._photo.jpg")


def test_the_default_decoder_and_opencv_give_the_same_pixels_for_a_jpeg():
    """Pillow (workstation) and OpenCV (Pi) see the same pixels, so a model judged on one is judged
    on what the other sees; without Pillow the default path must be OpenCV's."""
    rng = np.random.default_rng(0)
    jpeg = _encode(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), ".jpg")
    np.testing.assert_array_equal(images.decode_rgb(jpeg), images._opencv_decode(jpeg))
