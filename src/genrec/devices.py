"""The device a stage runs on and its memory: what is free now, and the peak a stage used.

Stages report the peak of their main phase (training, decoding) in GB: GPU allocator statistics
on a GPU, the process's peak resident set size on CPU.
"""

from __future__ import annotations

import ctypes
import gc
import os
import resource
from pathlib import Path

import torch


def pick_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def reset_peak_memory() -> None:
    """Start a new peak-memory window (GPU: allocator stats; Linux CPU: the process's VmHWM).

    Lets a stage report the peak of its main phase (training, decoding) rather than of model
    loading, which for a GGUF or 4-bit model briefly holds a full-precision copy.
    """
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    gc.collect()
    try:  # glibc keeps freed heap memory in the process; hand it back so that RSS is what is in use
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: reset the peak resident set size to the current one
    except OSError:
        pass  # not Linux (or not permitted): the peak then covers the whole process


def available_memory_bytes(device: torch.device) -> int:
    """Memory a new allocation can use now.

    On a GPU: free device memory plus what PyTorch holds in reserve unused. On CPU: the smaller of the
    system's ``MemAvailable`` and the room left under this process's cgroup limit (SLURM jobs run in one).
    """
    if device.type == "cuda":  # free on the device, plus what PyTorch holds in reserve but does not use
        reserved = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(torch.cuda.mem_get_info(device)[0] + reserved)
    avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            avail = min(avail, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(int(avail), 0)


def peak_memory_gb() -> float:
    """Peak GPU memory if CUDA is in use, else this process's peak RSS (since the last reset), in GB."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1e6  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB
