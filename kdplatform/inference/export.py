"""Exporting a student for deployment (`depthkd export`): ONNX (torch's dynamo exporter, fixed or
dynamic H and W, the model's meta in the file's metadata) or TorchScript, then checked against
PyTorch eager on a real image (parity in metres) and timed against it, interleaved.

torch 2.14 may write an ONNX model's weights to `<file>.data` beside it: ship both.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from depthkd.errors import ConfigError
from depthkd.eval.cost import median_latencies_ms
from depthkd.inference.predictor import META_KEY, Predictor, load_predictor, model_predictor
from depthkd.models.depth_model import DepthModel
from depthkd.models.kinds import ModelKind
from depthkd.models.serialization import model_meta

Format = Literal["onnx", "torchscript"]
MAX_DYNAMIC = 4096  # largest height and width a dynamic ONNX model accepts
MIN_SIZE = 16
DEFAULT_SIZE = (352, 704)  # for a model file that does not say what it was trained at


@dataclass(frozen=True)
class ExportReport:
    path: str
    files: list[str]  # everything to ship (the model and, for ONNX, its external data)
    format: str
    opset: int | None
    dynamic: bool
    height: int
    width: int
    parity_max_abs_m: float  # on the real image, at the export size, against PyTorch eager
    parity_other_size_m: float | None  # dynamic ONNX only: at another size
    eager_ms: float
    exported_ms: float
    threads: int

    @property
    def speedup(self) -> float:
        return self.eager_ms / self.exported_ms

    def to_dict(self) -> dict:
        return asdict(self) | {"speedup": self.speedup}


def export_model(
    ref: str,
    out: Path,
    *,
    fmt: Format,
    size: tuple[int | None, int | None],
    dynamic: bool,
    image: np.ndarray,
    repeats: int = 20,
) -> ExportReport:
    """Exports the student `ref` to `out` and measures parity and latency on `image`, PyTorch
    eager on the CPU like the exported model. `size` (height, width) defaults to the frame size
    the model was trained at, else 352x704."""
    model = _model_of(ref)
    eager = model_predictor(model, ref, device="cpu")
    trained = model_meta(model).get("input_size") or DEFAULT_SIZE
    height, width = (given or default for given, default in zip(size, trained, strict=True))
    if min(height, width) < MIN_SIZE or repeats < 1:
        raise ConfigError(f"export needs --height/--width >= {MIN_SIZE} and --repeats >= 1")
    example = torch.rand(1, 3, height, width)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = model_meta(model) | {"max_depth": float(model.max_depth)}
    opset = None
    if fmt == "onnx":
        opset = _export_onnx(model, example, out, dynamic=dynamic, meta=meta)
        exported = load_predictor(str(out))
    else:
        traced = torch.jit.trace(model, example, check_trace=False)
        tmp = out.with_name(f".{out.name}.tmp")
        traced.save(str(tmp))
        os.replace(tmp, out)
        exported = _torchscript_predictor(out, eager, (height, width))
    fitted = _fit(image, height, width)
    parity = _max_abs(eager, exported, fitted)
    other = None
    if fmt == "onnx" and dynamic:  # a size other than the export size, not a stride multiple
        other = _max_abs(eager, exported, _fit(image, height * 3 // 4 + 5, width * 3 // 4 + 3))
    batch = np.ascontiguousarray(fitted.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
    times = median_latencies_ms(
        {"eager": lambda: eager.run(batch), "exported": lambda: exported.run(batch)},
        repeats=repeats,
        warmup=3,
    )
    files = [str(out)] + [str(p) for p in sorted(out.parent.glob(f"{out.name}.data"))]
    return ExportReport(
        path=str(out),
        files=files,
        format=fmt,
        opset=opset,
        dynamic=dynamic,
        height=height,
        width=width,
        parity_max_abs_m=parity,
        parity_other_size_m=other,
        eager_ms=times["eager"],
        exported_ms=times["exported"],
        threads=torch.get_num_threads(),
    )


def _model_of(ref: str) -> DepthModel:
    from depthkd.tracking.references import load_model_reference

    model = load_model_reference(ref, expect=ModelKind.STUDENT)
    assert isinstance(model, DepthModel)  # what a student's file rebuilds to
    return model.eval()


def _export_onnx(
    model: nn.Module, example: torch.Tensor, out: Path, *, dynamic: bool, meta: dict
) -> int:
    shapes = None
    if dynamic:
        h = torch.export.Dim("height", min=16, max=MAX_DYNAMIC)
        w = torch.export.Dim("width", min=16, max=MAX_DYNAMIC)
        shapes = {"image": {2: h, 3: w}}
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=["image"],
        output_names=["depth"],
        dynamic_shapes=shapes,
    )
    assert program is not None  # None only without dynamo=True
    program.model.metadata_props[META_KEY] = json.dumps(meta)
    program.save(str(out))
    return int(program.model.opset_imports[""])


def _torchscript_predictor(path: Path, like: Predictor, size: tuple[int, int]) -> Predictor:
    """A traced model keeps the shape arithmetic of the traced size: that size only."""
    scripted = torch.jit.load(str(path), map_location="cpu").eval()

    @torch.inference_mode()
    def run(batch: np.ndarray) -> np.ndarray:
        return scripted(torch.from_numpy(batch)).float().numpy()

    return Predictor(run, str(path), like.input_size, size, like.max_depth)


def _fit(image: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def _max_abs(a: Predictor, b: Predictor, image: np.ndarray) -> float:
    return float(np.abs(a.predict(image, "native") - b.predict(image, "native")).max())
