"""Image files in and out of `depthkd predict`: RGB inputs read the way cameras and phones write
them, depth written as uint16 PNG (metres × scale), a colour preview with a depth scale bar, and
optionally the raw float32 array."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from depthkd import atomic
from depthkd.data.constants import UINT16_MAX
from depthkd.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


def read_rgb(path: Path) -> np.ndarray:
    """The image as uint8 `(H, W, 3)`, upright as its EXIF orientation says; greyscale, palette
    and RGBA (alpha dropped) images become RGB.

    Raises:
        DataError: the file is missing or not a readable image (names the file).
    """
    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image)
            if upright.mode in ("I;16", "I;16B", "I", "F"):  # 16-bit / float greyscale
                values = np.asarray(upright, dtype=np.float64)
                span = max(float(values.max()), 1.0)
                upright = Image.fromarray((255 * values / span).astype(np.uint8))
            return np.asarray(upright.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def write_depth_png(path: Path, depth: np.ndarray, scale: float) -> None:
    """Depth in metres as a 16-bit PNG holding `round(depth * scale)`, clipped to 0..65535."""
    values = np.clip(np.rint(depth.astype(np.float64) * scale), 0, UINT16_MAX).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    atomic.write_bytes(path, buffer.getvalue())


def write_preview(path: Path, depth: np.ndarray, *, max_depth: float, title: str) -> None:
    """A colour-mapped depth image (near = bright) with a scale bar in metres, as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height, width = depth.shape
    inches = 6.0
    figure = Figure(figsize=(inches * 1.18, inches * height / width + 0.5), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.02, 0.02, 0.8, 0.9))
    shown = axes.imshow(depth, cmap="magma_r", vmin=0.0, vmax=max_depth, interpolation="nearest")
    axes.set_axis_off()
    axes.set_title(title, fontsize=9)
    bar = figure.colorbar(shown, ax=axes, fraction=0.05, pad=0.02)
    bar.set_label("depth (m)")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic.write_bytes(path, buffer.getvalue())


def write_npy(path: Path, depth: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, depth.astype(np.float32))
    atomic.write_bytes(path, buffer.getvalue())


def expand_inputs(inputs: list[str]) -> list[tuple[Path, Path]]:
    """(file, output stem relative to --out) for every image named by files, folders (searched
    recursively) or glob patterns, in a stable order; a folder's images keep their subfolders.

    Raises:
        DataError: an input names nothing.
    """
    found: list[tuple[Path, Path]] = []
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            found += [(f, f.relative_to(path).with_name(f.stem)) for f in files]
        elif path.exists():
            found.append((path, Path(path.stem)))
        elif matches := sorted(Path().glob(text) if not path.is_absolute() else _glob(path)):
            found += [(m, Path(m.stem)) for m in matches if m.is_file()]
        else:
            raise DataError(f"input {text!r}: no such file, folder or matching files")
    return found


def _glob(pattern: Path) -> list[Path]:
    anchor = Path(pattern.anchor)
    return list(anchor.glob(str(pattern.relative_to(anchor))))
