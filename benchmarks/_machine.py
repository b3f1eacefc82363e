"""What the benchmarks print about the machine they ran on."""

from __future__ import annotations

import contextlib
import platform


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what Python knows of it."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"
