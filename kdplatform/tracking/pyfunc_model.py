"""The MLflow pyfunc face of a depth model: RGB image array(s) in, metric depth out.

Served or loaded with `mlflow.pyfunc.load_model`, it needs nothing but the logged model directory:
the weights file is one of its artifacts and the `models` / `kdplatform` packages travel as code
paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import torch

from kdplatform.errors import DataError
from models.serialization import load_model

WEIGHTS_ARTIFACT = "weights"  # key of the weights file in the pyfunc's `artifacts`


class DepthPyfuncModel(mlflow.pyfunc.PythonModel):
    """Predicts metric depth `(H, W)` float32 for an RGB `(H, W, 3)` image.

    Input: one image, a list of images (sizes may differ), or a batch `(N, H, W, 3)`; uint8 in
    [0, 255] or float in [0, 1]. Output: one depth map, a list, or `(N, H, W)` respectively.
    Runs on the first CUDA device when there is one.
    """

    def load_context(self, context: Any) -> None:
        """Rebuilds the model from the weights artifact."""
        self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        path = Path(context.artifacts[WEIGHTS_ARTIFACT])
        self._model = load_model(path).to(self._device)

    # The `np.ndarray` hint keeps MLflow from inferring a schema (it cannot express "a list of
    # images of any size"); lists are accepted too.
    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> Any:
        """Depth in metres for `model_input` (see the class docstring)."""
        if isinstance(model_input, np.ndarray) and model_input.ndim == 4:
            return np.stack([self._predict_one(image) for image in model_input])
        if isinstance(model_input, np.ndarray):
            return self._predict_one(model_input)
        if isinstance(model_input, list | tuple):
            return [self._predict_one(np.asarray(image)) for image in model_input]
        raise DataError(
            f"expected an RGB image array (H, W, 3) or a list of them, got {type(model_input)}"
        )

    @torch.inference_mode()
    def _predict_one(self, image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[-1] != 3:
            raise DataError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")
        scale = 255.0 if image.dtype == np.uint8 else 1.0
        pixels = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32) / scale)
        batch = pixels.permute(2, 0, 1).unsqueeze(0).to(self._device)  # (1, 3, H, W)
        out = self._model(batch)
        depth = getattr(out, "depth", out)  # an acclimated teacher answers with its own head
        return depth[0, 0].float().cpu().numpy()  # (H, W)
