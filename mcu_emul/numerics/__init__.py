"""Numerics: int8 kernels, quantization, the float reference, dry-run stand-ins, accuracy."""
