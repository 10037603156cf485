"""Test and benchmark material shipped with the library: real-format synthetic AWQ checkpoints."""

from __future__ import annotations

from .synthetic import SHAPES, ModelShape, make_synthetic_checkpoint

__all__ = ["SHAPES", "ModelShape", "make_synthetic_checkpoint"]
