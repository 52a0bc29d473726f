"""`depthkd predict` (depth maps for images, with any student: registry, run, `.pt` or `.onnx`)
and `depthkd export` (ONNX or TorchScript, with parity and latency against PyTorch)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from depthkd.cli import EXIT_ERROR


def add_parser(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser(
        "predict",
        help="depth maps for images: uint16 PNG, colour preview, optional .npy",
        description="MODEL is a registry reference (depthkd-student@champion, models:/...), an "
        "MLflow run id, an exported .pt or an .onnx file (run with ONNX Runtime). INPUT is image "
        "files, folders (searched recursively) or glob patterns. Any image size: with --resize "
        "fit (default) the image is scaled, aspect kept, to fit the frame size the model was "
        "trained at, and the depth scaled back to the image's size; --resize native runs the "
        "model at the image's own size. EXIF orientation is applied; greyscale and RGBA become "
        "RGB. A file that cannot be read is reported and skipped; the exit code is then non-zero.",
    )
    predict.add_argument("--model", required=True, help="registry reference, run id, .pt or .onnx")
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="images, folders or globs")
    predict.add_argument("--out", type=Path, required=True, help="output folder")
    predict.add_argument(
        "--scale", type=float, default=1000.0, help="PNG value per metre (default 1000: mm)"
    )
    predict.add_argument("--resize", choices=("fit", "native"), default="fit")
    predict.add_argument("--npy", action="store_true", help="also write float32 metres as .npy")
    predict.add_argument("--no-preview", action="store_true", help="no colour previews")
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(run=run_predict)

    export = commands.add_parser(
        "export",
        help="export a student to ONNX or TorchScript; parity and latency against PyTorch",
        description="Exports with torch's dynamo ONNX exporter (or torch.jit.trace), then runs "
        "the exported model and PyTorch eager on --image at the export size: prints the largest "
        "depth difference (metres) and both latencies (median, batch 1, interleaved). A dynamic "
        "ONNX model is also checked at another size. When MODEL is a registered version the files "
        "are logged to its run (export/) and the version is tagged. ONNX weights may land in "
        "<file>.data beside the model: ship both.",
    )
    export.add_argument("--model", required=True, help="registry reference, run id or .pt")
    export.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    export.add_argument("--height", type=int, help="default: the model's training frame size")
    export.add_argument("--width", type=int, help="default: the model's training frame size")
    export.add_argument(
        "--dynamic", action="store_true", help="ONNX with free height and width (else fixed)"
    )
    export.add_argument("--image", type=Path, required=True, help="a real image for the checks")
    export.add_argument("--out", type=Path, required=True, help="output file (.onnx / .pt)")
    export.add_argument("--repeats", type=int, default=20, help="timed runs per side")
    export.add_argument("--json", type=Path, help="also write the report as JSON")
    export.set_defaults(run=run_export)


def run_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from depthkd.errors import ConfigError, DataError
    from depthkd.inference import images
    from depthkd.inference.predictor import load_predictor

    if args.scale <= 0:
        raise ConfigError(f"--scale must be positive, not {args.scale}")
    files = images.expand_inputs(args.inputs)
    predictor = load_predictor(args.model)
    size = predictor.fixed_size or predictor.input_size
    how = (
        f"fitted to {size[0]}x{size[1]} and back"
        if size and (args.resize == "fit" or predictor.fixed_size)
        else "at each image's own size"
    )
    print(f"model {predictor.source}: {len(files)} image(s), depth {how}")
    failed: list[tuple[Path, str]] = []
    bar = tqdm(files, unit="image", disable=args.quiet or len(files) < 2, file=sys.stderr)
    for path, stem in bar:
        try:
            depth = predictor.predict(images.read_rgb(path), args.resize)
        except DataError as exc:
            failed.append((path, str(exc)))
            bar.write(f"skipped {path}: {exc}")
            continue
        target = args.out / stem
        target.parent.mkdir(parents=True, exist_ok=True)
        images.write_depth_png(target.with_name(f"{target.name}.png"), depth, args.scale)
        if not args.no_preview:
            title = f"{path.name}: {depth.min():.2f}-{depth.max():.2f} m"
            images.write_preview(
                target.with_name(f"{target.name}_preview.png"),
                depth,
                max_depth=predictor.max_depth,
                title=title,
            )
        if args.npy:
            images.write_npy(target.with_name(f"{target.name}.npy"), depth)
    print(
        f"wrote {len(files) - len(failed)} depth map(s) to {args.out} "
        f"(PNG value = metres x {args.scale:g})"
    )
    if failed:
        print(f"error: {len(failed)} input(s) could not be read", file=sys.stderr)
        return EXIT_ERROR
    return 0


def run_export(args: argparse.Namespace) -> int:
    from depthkd import atomic
    from depthkd.errors import ConfigError
    from depthkd.inference.export import export_model
    from depthkd.inference.images import read_rgb
    from depthkd.tracking.model_registry import attach_export

    if args.dynamic and args.format != "onnx":
        raise ConfigError("--dynamic applies to ONNX; TorchScript traces one size")
    report = export_model(
        args.model,
        args.out,
        fmt=args.format,
        size=(args.height, args.width),
        dynamic=args.dynamic,
        image=read_rgb(args.image),
        repeats=args.repeats,
    )
    shape = "dynamic HxW" if report.dynamic else f"{report.height}x{report.width}"
    opset = f", opset {report.opset}" if report.opset else ""
    print(f"exported {args.model} to {', '.join(report.files)} ({report.format}, {shape}{opset})")
    print(
        f"parity on {args.image.name} at {report.height}x{report.width}: max |depth difference| "
        f"{report.parity_max_abs_m:.2e} m"
        + (
            f"; at another size {report.parity_other_size_m:.2e} m"
            if report.parity_other_size_m is not None
            else ""
        )
    )
    print(
        f"latency at {report.height}x{report.width}, batch 1, {report.threads} threads: "
        f"PyTorch eager {report.eager_ms:.1f} ms, {report.format} {report.exported_ms:.1f} ms "
        f"({report.speedup:.2f}x; {1000 / report.exported_ms:.1f} frames/s)"
    )
    version = attach_export(
        args.model,
        [Path(f) for f in report.files],
        {
            f"export.{report.format}": Path(report.path).name,
            f"export.{report.format}.parity_m": f"{report.parity_max_abs_m:.3g}",
            f"export.{report.format}.shape": shape,
            **({f"export.{report.format}.opset": report.opset} if report.opset else {}),
        },
    )
    if version:
        print(f"logged to the run of {version} (export/) and tagged the version")
    if args.json:
        atomic.write_json(args.json, report.to_dict())
    return 0
