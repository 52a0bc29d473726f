"""The MLflow pyfunc face of a depth model, logged as a "model from code": one RGB image in, metric
depth of the same size out.

MLflow copies this file into the logged model and runs it to load the model (`set_model` at the
bottom), so no pickled Python object is ever stored or unpickled; the weights are an artifact
read with `weights_only=True`, and the `depthkd` package (`depthkd.models` in it) is its code.
Only MLflow runs this file; `model_registry.log_depth_model` names it. Signature (set there):
uint8 `(H, W, 3)` → float32 `(H, W)` metres, any H and W (the model pads internally).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.models
import numpy as np
import torch
from mlflow.pyfunc import PythonModel

from depthkd.errors import DataError
from depthkd.models.serialization import load_model
from depthkd.tracking.model_registry import WEIGHTS_ARTIFACT


class DepthPyfuncModel(PythonModel):
    """Predicts metric depth `(H, W)` float32 for an RGB `(H, W, 3)` uint8 image.

    Runs on the first CUDA device when there is one.
    """

    def load_context(self, context: Any) -> None:
        """Rebuilds the model from the weights artifact."""
        self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        path = Path(context.artifacts[WEIGHTS_ARTIFACT])
        self._model = load_model(path).to(self._device)

    @torch.inference_mode()
    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        """Depth in metres `(H, W)` for one image `(H, W, 3)` (see the class docstring)."""
        image = np.asarray(model_input)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise DataError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")
        scale = 255.0 if image.dtype == np.uint8 else 1.0
        pixels = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32) / scale)
        batch = pixels.permute(2, 0, 1).unsqueeze(0).to(self._device)  # (1, 3, H, W)
        out = self._model(batch)
        depth = getattr(out, "depth", out)  # an acclimated teacher answers with its own head
        return depth[0, 0].float().cpu().numpy()  # (H, W)


mlflow.models.set_model(DepthPyfuncModel())
