"""A student ready to predict: PyTorch (a registered model, a run id or an exported `.pt`) or
ONNX Runtime (an `.onnx` file, with no PyTorch at all), and one rule for image sizes.

Sizes: a model works best at the frame size it was trained and evaluated at (`input_size`, kept
in the model file's `meta` and in the ONNX file's metadata). With `resize="fit"` (the default
when that size is known) the image is scaled, aspect kept, to fit inside it, the depth predicted
and scaled back to the image's own size; with `resize="native"` the model runs at the image's
size (it pads to its stride itself). An ONNX model exported for a fixed size gets the fitted
image padded (bottom and right, edge pixels) to exactly that size; the padding is cropped away.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from depthkd import storage
from depthkd.errors import CheckpointError, DataError
from depthkd.models.kinds import ModelKind

Resize = Literal["fit", "native"]
META_KEY = "depthkd"  # ONNX metadata_props key holding the model's meta as JSON


@dataclass(frozen=True)
class Predictor:
    """`run` maps `(1, 3, H, W)` float32 RGB in [0, 1] to `(1, 1, H, W)` metres."""

    run: Callable[[np.ndarray], np.ndarray]
    source: str  # what was loaded, for messages
    input_size: tuple[int, int] | None  # (height, width) it was trained / evaluated at
    fixed_size: tuple[int, int] | None  # the only size the backend accepts (fixed ONNX)
    max_depth: float

    def predict(self, image: np.ndarray, resize: Resize = "fit") -> np.ndarray:
        """Depth in metres, float32 `(H, W)`, for a uint8 RGB `(H, W, 3)` image."""
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise DataError(f"expected uint8 RGB (H, W, 3), got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        target = self.working_size(height, width, resize)
        work = image if target == (height, width) else _resize_rgb(image, target)
        padded = _pad_to(work, self.fixed_size) if self.fixed_size else work
        batch = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
        depth = np.asarray(self.run(batch), dtype=np.float32)[0, 0, : target[0], : target[1]]
        if target != (height, width):
            depth = _resize_depth(depth, (height, width))
        return depth

    def working_size(self, height: int, width: int, resize: Resize) -> tuple[int, int]:
        """The size the model runs at for a `height`×`width` image (before fixed-size padding)."""
        size = self.fixed_size or (self.input_size if resize == "fit" else None)
        if size is None:
            return height, width
        scale = min(size[0] / height, size[1] / width)
        return max(1, round(height * scale)), max(1, round(width * scale))


def load_predictor(ref: str) -> Predictor:
    """The model behind `ref`: an `.onnx` file (ONNX Runtime), else anything
    `depthkd evaluate --model` takes (model file, `name@alias`, `models:/...`, run id)."""
    if ref.lower().endswith(".onnx"):
        if storage.is_remote(ref):  # the graph may come with a separate .onnx.data file
            raise CheckpointError(
                f"{ref}: ONNX models are read from local files",
                hint="copy it (and its .onnx.data file, if any) to this machine first",
            )
        return _onnx_predictor(Path(ref))
    return torch_predictor(ref)


def torch_predictor(ref: str) -> Predictor:
    from depthkd.tracking.references import load_model_reference

    return model_predictor(load_model_reference(ref, expect=ModelKind.STUDENT), ref)


def model_predictor(model: Any, source: str, *, device: str | None = None) -> Predictor:
    """A loaded PyTorch student as a `Predictor` (on CUDA when there is one, unless `device`)."""
    import torch

    from depthkd.models.serialization import model_meta

    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.eval().to(target)

    @torch.inference_mode()
    def run(batch: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(batch).to(target)).float().cpu().numpy()

    size = model_meta(model).get("input_size")
    return Predictor(
        run=run,
        source=source,
        input_size=tuple(size) if size else None,
        fixed_size=None,
        max_depth=float(model.max_depth),
    )


def _onnx_predictor(path: Path) -> Predictor:
    import onnxruntime

    if not path.is_file():
        raise CheckpointError(f"ONNX model {path} does not exist")
    options = onnxruntime.SessionOptions()
    # idle intra-op threads otherwise spin after each run and slow whatever runs next on the
    # same cores (on 2 cores an eager model timed between ONNX runs took 129 ms instead of 96)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise CheckpointError(f"cannot load ONNX model {path}: {exc}") from exc
    meta = json.loads(session.get_modelmeta().custom_metadata_map.get(META_KEY, "{}"))
    (tensor,) = session.get_inputs()
    dims = tensor.shape[-2:]
    fixed = tuple(dims) if all(isinstance(d, int) for d in dims) else None
    name = tensor.name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {name: batch})[0]

    size = meta.get("input_size")
    return Predictor(
        run=run,
        source=str(path),
        input_size=tuple(size) if size else None,
        fixed_size=fixed,
        max_depth=float(meta.get("max_depth", 10.0)),
    )


def _resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def _resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    resized = Image.fromarray(depth.astype(np.float32), mode="F")
    return np.asarray(
        resized.resize((size[1], size[0]), Image.Resampling.BILINEAR), dtype=np.float32
    )


def _pad_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = image.shape[:2]
    return np.pad(image, ((0, size[0] - height), (0, size[1] - width), (0, 0)), mode="edge")
