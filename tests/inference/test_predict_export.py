"""Using a student: `depthkd predict` on real and awkward images, ONNX export and ONNX Runtime
predictions equal to PyTorch's, the ONNX path without PyTorch, and the champion served over REST
by `mlflow models serve` on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from depthkd.cli.main import main
from depthkd.config.schema import StudentConfig
from depthkd.inference.images import read_rgb
from depthkd.inference.predictor import load_predictor
from depthkd.models.serialization import save_model
from depthkd.models.zoo import build_student
from depthkd.ports import HOST, free_port
from tests.conftest import KITTI_DEMO, NYU_DEMO

REPO = Path(__file__).resolve().parents[2]
TRAINED_AT = [64, 96]  # the input_size a training export records


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = StudentConfig(name="mobilenetv2_050", decoder_channels=(8, 8, 16, 16))
    model = build_student(cfg, max_depth=10.0).eval()
    path = tmp_path_factory.mktemp("student") / "student.pt"
    return save_model(model, path, meta={"input_size": TRAINED_AT})


@pytest.fixture(scope="module")
def onnx_file(student: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("onnx") / "student.onnx"
    image = tmp_path_factory.mktemp("img") / "frame.png"
    Image.fromarray(_random_image(120, 160, seed=3)).save(image)
    report = out.with_suffix(".json")
    code = main(
        ["export", "--model", str(student), "--format", "onnx", "--dynamic", "--height", "64",
         "--width", "96", "--image", str(image), "--out", str(out), "--repeats", "3",
         "--json", str(report)]
    )  # fmt: skip
    assert code == 0
    return out, report


def _random_image(h: int, w: int, *, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _awkward_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    """Greyscale, RGBA, an EXIF-rotated JPEG and an odd size; name → expected (H, W)."""
    folder.mkdir(parents=True)
    Image.fromarray(_random_image(50, 70, seed=1)[..., 0]).save(folder / "grey.png")
    Image.fromarray(_random_image(33, 47, seed=2)).convert("RGBA").save(folder / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    Image.fromarray(_random_image(40, 60, seed=4)).save(folder / "phone.jpg", exif=exif)
    Image.fromarray(_random_image(20, 30, seed=5)).save(folder / "clip.000001.png")
    Image.fromarray(_random_image(20, 30, seed=6)).save(folder / "clip.000002.png")
    (folder / "broken.png").write_bytes(b"not an image at all")
    # dotted frame names keep their whole stem: clip.000001 and clip.000002 stay two files
    return {
        "grey": (50, 70),
        "rgba": (33, 47),
        "phone": (60, 40),
        "clip.000001": (20, 30),
        "clip.000002": (20, 30),
    }


def test_predict_writes_depth_of_each_inputs_size_and_reports_bad_files(
    student: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    expected = _awkward_inputs(tmp_path / "in")
    out = tmp_path / "out"
    code = main(["predict", "--model", str(student), str(tmp_path / "in"), "--out", str(out),
                 "--npy", "--quiet"])  # fmt: skip
    assert code == 2  # the broken file, reported, not silently dropped
    captured = capsys.readouterr()
    assert "skipped" in captured.out + captured.err and "broken.png" in captured.out + captured.err
    assert "fitted to 64x96 and back" in captured.out
    for name, (h, w) in expected.items():
        png = np.asarray(Image.open(out / f"{name}.png"))
        assert png.dtype == np.uint16 and png.shape == (h, w), name
        depth = np.load(out / f"{name}.npy")
        assert depth.shape == (h, w)
        # millimetres by default
        expected_mm = np.clip(np.rint(depth.astype(np.float64) * 1000), 0, 65535)
        np.testing.assert_array_equal(png, expected_mm)
        assert Image.open(out / f"{name}_preview.png").size[0] > 300
    assert not (out / "broken.png").exists()


def test_predict_on_the_real_frames(student: Path, tmp_path: Path, realdata: Path) -> None:
    frames = sorted((NYU_DEMO / "rgb").glob("*.jpg")) + sorted((KITTI_DEMO / "rgb").glob("*.png"))
    code = main(["predict", "--model", str(student), *map(str, frames), "--out",
                 str(tmp_path), "--quiet"])  # fmt: skip
    assert code == 0
    for frame in frames:
        height, width = read_rgb(frame).shape[:2]
        assert np.asarray(Image.open(tmp_path / f"{frame.stem}.png")).shape == (height, width)


def test_onnx_predictions_equal_pytorch_at_any_size(
    student: Path, onnx_file: tuple[Path, Path]
) -> None:
    onnx, report_file = onnx_file
    report = json.loads(report_file.read_text())
    assert report["opset"] >= 18 and report["dynamic"]
    assert report["parity_max_abs_m"] < 1e-3 and report["parity_other_size_m"] < 1e-3
    eager, exported = load_predictor(str(student)), load_predictor(str(onnx))
    assert exported.input_size == tuple(TRAINED_AT) and exported.fixed_size is None
    for h, w in ((64, 96), (75, 123), (200, 150)):
        image = _random_image(h, w, seed=h)
        for resize in ("fit", "native"):
            np.testing.assert_allclose(
                exported.predict(image, resize), eager.predict(image, resize), atol=1e-3
            )


def test_onnx_path_runs_without_pytorch(onnx_file: tuple[Path, Path], tmp_path: Path) -> None:
    onnx, _ = onnx_file
    script = (
        "import sys, numpy as np\n"
        "from depthkd.inference.predictor import load_predictor\n"
        f"p = load_predictor({str(onnx)!r})\n"
        "d = p.predict(np.zeros((70, 90, 3), np.uint8))\n"
        "assert d.shape == (70, 90), d.shape\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_the_champion_is_served_over_rest(student: Path, home: Path, tmp_path: Path) -> None:
    from depthkd.models.serialization import load_model
    from depthkd.tracking.model_registry import log_depth_model, register_model
    from depthkd.tracking.runs import open_job_run

    run = open_job_run(experiment="tests", job_id="serve")
    model = load_model(student)
    uri = log_depth_model(run, model, name="student")
    register_model(uri, "depthkd-student", alias="champion", tags={"dataset": "nyu"})
    port = free_port()
    venv_bin = str(Path(sys.executable).parent)  # the server execs uvicorn from PATH
    env = os.environ | {
        "MLFLOW_TRACKING_URI": run.tracking_uri,
        "PATH": os.pathsep.join([venv_bin, os.environ.get("PATH", "")]),
    }
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
             "models:/depthkd-student@champion", "--env-manager", "local", "-h", HOST,
             "-p", str(port)],
            cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_for(f"http://{HOST}:{port}/ping", server, log)
        image = _random_image(45, 67, seed=5)
        request = urllib.request.Request(
            f"http://{HOST}:{port}/invocations",
            data=json.dumps({"inputs": image.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            depth = np.asarray(json.loads(answer.read())["predictions"], dtype=np.float32)
        assert depth.shape == (45, 67)
        with torch.no_grad():
            expected = model(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
        np.testing.assert_allclose(depth, expected[0, 0].numpy(), atol=1e-4)
    finally:
        with contextlib.suppress(ProcessLookupError):  # stop exactly the server's group
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _wait_for(url: str, server: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    pytest.fail(f"{url} did not answer in {timeout:.0f} s:\n{log.read_text()[-3000:]}")
