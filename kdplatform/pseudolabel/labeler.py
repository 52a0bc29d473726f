"""The per-batch work of a pass: decode → resize → teacher → quantise → encode, and the Ray actor
that does it with one model load.

`label_batch` is pure (a model and a batch of source rows in, encoded samples out), so the Ray
pass and the single-process baseline of `depthkd bench pseudo-label` run exactly the same code.
Encoding happens here too, in the actors, so that the driver only writes tars.

Rows are dicts of equal-length arrays (Ray Data's "numpy" batch format). Source rows hold `shard`,
`index` (the sample's position in its source shard), `key`, `rgb` (the source image bytes) and
`meta` (the source meta.json bytes); output rows hold `shard`, `index`, `key` and one bytes column
per output file (`OUTPUT_FILES`; `confidence_png` is empty for a teacher without confidence), plus
the `node_id` and `worker` (pid) of the actor that labelled them.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from depthkd.data import images
from depthkd.errors import DataError
from depthkd.pseudolabel.format import (
    encode_sample,
    pseudo_meta,
    quantise_confidence,
    quantise_depth,
)
from depthkd.pseudolabel.teacher import load_teacher, teacher_maps

Rows = dict[str, np.ndarray]
OUTPUT_FILES = {
    "rgb.png": "rgb_png",
    "pseudo.png": "pseudo_png",
    "confidence.png": "confidence_png",
    "meta.json": "meta_json",
}


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`rgb` (H, W, 3) uint8 resized bilinearly to `size` (height, width); as is when equal."""
    if rgb.shape[:2] == tuple(size):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def prepare_frames(
    rows: Rows, size: tuple[int, int], *, resize: bool
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The batch's frames at `size` as uint8 (B, H, W, 3) and their source metas.

    Args:
        resize: scale frames of another size; False makes such a frame an error (the size was
            taken from the source frames, which must then all have it).
    """
    frames, metas = [], []
    columns = (rows["shard"], rows["key"], rows["rgb"], rows["meta"])
    for shard, key, data, meta in zip(*columns, strict=True):
        where = f"{shard}:{key}"
        rgb = images.decode_rgb(bytes(data), f"{where}.rgb")
        if not resize and rgb.shape[:2] != tuple(size):
            raise DataError(
                f"{where}: frame is {rgb.shape[0]}x{rgb.shape[1]}, others are "
                f"{size[0]}x{size[1]}: the source frames differ in size",
                hint="pass --size H W (frames are resized to it before labelling)",
            )
        frames.append(resize_rgb(rgb, size))
        metas.append(json.loads(bytes(meta)))
    return np.stack(frames), metas


@torch.inference_mode()
def predict(
    model: nn.Module, frames: np.ndarray, device: torch.device
) -> tuple[np.ndarray, np.ndarray | None]:
    """Depth (B, H, W) float32 metres and confidence (B, H, W) or None for uint8 frames."""
    batch = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float() / 255.0  # (B,3,H,W)
    depth, confidence = teacher_maps(model(batch))
    depth_np = depth.float()[:, 0].cpu().numpy()  # (B, H, W)
    conf_np = None if confidence is None else confidence.float()[:, 0].cpu().numpy()
    return depth_np, conf_np


def label_batch(
    model: nn.Module,
    rows: Rows,
    *,
    size: tuple[int, int],
    depth_scale: float,
    resize: bool = True,
    device: torch.device | None = None,
) -> Rows:
    """Labels one batch of source rows; returns the encoded output rows (see module docstring)."""
    device = device or torch.device("cpu")
    frames, metas = prepare_frames(rows, size, resize=resize)
    depth, confidence = predict(model, frames, device)
    out: dict[str, list[Any]] = {
        name: [] for name in ("shard", "index", "key", *OUTPUT_FILES.values())
    }
    for i, key in enumerate(rows["key"]):
        key = str(key)
        meta = pseudo_meta(metas[i], key=key, size=size, depth_scale=depth_scale)
        sample = encode_sample(
            key,
            frames[i],
            quantise_depth(depth[i], depth_scale),
            None if confidence is None else quantise_confidence(confidence[i]),
            meta,
        )
        out["shard"].append(str(rows["shard"][i]))
        out["index"].append(int(rows["index"][i]))
        out["key"].append(key)
        for name, column in OUTPUT_FILES.items():
            out[column].append(sample.get(name, b""))
    return {name: np.array(values, dtype=object) for name, values in out.items()}


def output_sample(row: dict[str, Any]) -> dict[str, Any]:
    """An output row as the shard sample `webdataset.TarWriter` writes (no empty files)."""
    sample: dict[str, Any] = {"__key__": str(row["key"])}
    for name, column in OUTPUT_FILES.items():
        data = bytes(row[column])
        if data:
            sample[name] = data
    return sample


class Labeler:
    """A Ray Data actor: loads the teacher once, then labels batch after batch.

    Args:
        model: the model file's bytes, or an object ref to them (one copy in the object store
            for all actors, on every node).
        size: (height, width) frames are labelled at.
        depth_scale: of the pseudo-label PNGs.
        resize: see `prepare_frames`.
        threads: torch intra-op threads (the CPUs this actor holds); 0 keeps torch's default.
    """

    def __init__(
        self,
        *,
        model: Any,
        size: tuple[int, int],
        depth_scale: float,
        resize: bool,
        threads: int,
    ) -> None:
        import ray

        self.threads = threads
        self._threads_set = threading.local()
        self._use_threads()
        data = ray.get(model) if isinstance(model, ray.ObjectRef) else model
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_teacher(data).to(self.device)
        self.size, self.depth_scale, self.resize = (size[0], size[1]), depth_scale, resize
        self.node_id = ray.get_runtime_context().get_node_id()
        self.pid = os.getpid()

    def _use_threads(self) -> None:
        """Sets torch's intra-op threads in the calling thread: OpenMP keeps the count per
        thread, and Ray Data calls the actor from a thread of its own, where it would otherwise
        be the process default (`OMP_NUM_THREADS`, which Ray sets from the actor's CPUs)."""
        if self.threads > 0 and not getattr(self._threads_set, "done", False):
            torch.set_num_threads(self.threads)
            self._threads_set.done = True

    def __call__(self, rows: Rows) -> Rows:
        self._use_threads()
        out = label_batch(
            self.model,
            rows,
            size=self.size,
            depth_scale=self.depth_scale,
            resize=self.resize,
            device=self.device,
        )
        count = len(out["key"])
        out["node_id"] = np.array([self.node_id] * count, dtype=object)
        out["worker"] = np.array([self.pid] * count, dtype=np.int64)
        return out
