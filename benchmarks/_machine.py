"""What the benchmarks print about the machine they ran on."""

from __future__ import annotations

from lrbatch.workers.slots import cpu_model

__all__ = ["cpu_model"]
