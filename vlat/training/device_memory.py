"""Memory a new allocation can get on a device (the one place that asks), and sizes in words."""

from __future__ import annotations

import os

import torch

GIB = 1024**3


def available_bytes(device: torch.device) -> int:
    """Free device memory plus the allocator's cached, unused blocks (CUDA); ``MemAvailable`` on the host (CPU)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def size(n: float) -> str:
    """Bytes as GiB, or MiB below a tenth of one."""
    return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / 2**20:.1f} MiB"
