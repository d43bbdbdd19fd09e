"""Deploying the hardened student: ONNX export with a parity check."""
