"""Exports of a trained run for deployment: ONNX (``onnx.py``)."""
