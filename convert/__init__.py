"""Keras -> TFLite conversion and parity checks (workstation)."""
