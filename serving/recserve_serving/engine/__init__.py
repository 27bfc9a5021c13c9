"""Optimized engines: build a checkpoint into a cached, verified engine directory and load it.

Importing this package is cheap; torch, ONNX and TensorRT load only in the modules that need them.
"""
