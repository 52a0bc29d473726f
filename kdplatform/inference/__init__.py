"""Using a trained student: load it (PyTorch or ONNX Runtime), run it on images of any size,
write depth PNGs and previews."""
