"""Reading and checking raw RGB and depth images, with errors that name the file.

Depth maps are uint16 PNGs (metres = value / depth_scale, 0 = invalid). A depth file of any other
type (8-bit, RGB, float) is rejected rather than silently converted: an 8-bit depth map loses
precision that cannot be recovered. The same decoder serves prepare, verify and the loader, so the
depth values read back are exactly the values stored.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from depthkd.errors import DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"


def rgb_extension(data: bytes, where: str) -> str:
    """Returns "png" or "jpg" from the file's magic bytes (not its name)."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SIGNATURE):
        return "jpg"
    raise DataError(f"{where}: not a PNG or JPEG image (first bytes {data[:8]!r})")


def decode_rgb(data: bytes, where: str) -> np.ndarray:
    """Decodes PNG/JPEG bytes to an upright uint8 array (H, W, 3).

    An EXIF orientation tag (phone photos are often stored sideways with one) is applied here, so
    prepare, verify, the loader and predict all see the same upright pixels while the shards keep
    the source bytes unchanged. Images without the tag are not copied.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error) as exc:
        raise DataError(f"{where}: unreadable or corrupt image ({exc})") from None


def png_depth_header(data: bytes, where: str) -> tuple[int, int]:
    """Checks that `data` is a 16-bit single-channel PNG; returns its (height, width).

    The IHDR chunk says the bit depth and colour type exactly, which Pillow's modes do not (they
    differ between Pillow versions for 16-bit grey).
    """
    if len(data) < 26 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise DataError(f"{where}: depth map is not a PNG file (expected a uint16 PNG)")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", data[16:26])
    if bit_depth != 16 or colour_type != 0:
        kind = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}.get(colour_type, "?")
        raise DataError(
            f"{where}: depth map must be a 16-bit greyscale PNG (uint16), "
            f"got {bit_depth}-bit {kind}",
            hint="store depth as uint16 with a depth_scale (KITTI: metres*256, NYU: millimetres)",
        )
    return height, width


def decode_depth(data: bytes, where: str) -> np.ndarray:
    """Decodes a uint16 PNG to a uint16 array (H, W) with the stored values unchanged."""
    png_depth_header(data, where)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            depth = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{where}: unreadable or corrupt depth PNG ({exc})") from None
    # Pillow gives 16-bit grey as "I;16" (uint16) or "I" (int32) depending on version.
    return depth.astype(np.uint16, copy=False)


def encode_depth(depth: np.ndarray) -> bytes:
    """Encodes a uint16 array (H, W) as a 16-bit greyscale PNG."""
    if depth.dtype != np.uint16 or depth.ndim != 2:
        raise DataError(
            f"depth to encode must be a 2-D uint16 array, got {depth.dtype} {depth.shape}"
        )
    buf = io.BytesIO()
    Image.fromarray(depth).save(buf, format="PNG")
    return buf.getvalue()


def encode_rgb_png(rgb: np.ndarray) -> bytes:
    """Encodes a uint8 array (H, W, 3) as a lossless PNG."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def encode_rgb_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    """Encodes a uint8 array (H, W, 3) as a JPEG with full-resolution chroma (4:4:4).

    For pixels that exist only decoded (video frames): at quality 95 the second lossy generation
    is invisible next to the video codec's own, at half the size of a PNG and several times its
    decoding speed, which is what a large unlabeled set streamed every epoch needs.
    """
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def read_bytes(path: Path, what: str, where: str) -> bytes:
    """Reads a whole file, translating a missing file into a DataError that names both places."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{where}: {what} file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"{where}: cannot read {what} file {path}: {exc}") from None
