"""The machine a benchmark ran on: CPU model, cores, RAM, SIMD, versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

GIB = 1024**3


def _cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo (empty where unavailable)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    if info:
                        break
                    continue
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def _mem_total_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu.get("model name") or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_bytes": _mem_total_bytes(),
        "simd": [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f in flags],
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "llama_cpp_python": _version("llama_cpp_python"),
        "warmlm": _version("warmlm"),
    }


def describe(info: dict[str, Any]) -> str:
    """One line: `CPU · N cores · R GiB RAM · SIMD`."""
    parts = [str(info.get("cpu") or "unknown CPU"), f"{info.get('cores')} cores"]
    if info.get("ram_bytes"):
        parts.append(f"{info['ram_bytes'] / GIB:.0f} GiB RAM")
    if info.get("simd"):
        parts.append(", ".join(info["simd"]))
    return " · ".join(parts)
