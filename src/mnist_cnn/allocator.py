"""How the C allocator treats freed memory: training on the CPU reuses the same large blocks."""

import ctypes
import ctypes.util
import sys

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
LARGEST_MMAP_THRESHOLD = 32 * 2**20  # glibc's ceiling on 64-bit systems
NEVER_TRIM = 2**30


def reuse_freed_memory() -> bool:
    """Keep freed blocks (up to 32 MiB each) in the process instead of returning them to the OS.

    Every training step allocates and frees the same activation buffers, a few MB each. By
    default glibc's heuristics often hand such blocks back to the OS (how often varies from
    process to process), and the next step takes the page faults and zero-filling of fresh
    memory again. Returns whether the setting took effect: it needs glibc (Linux);
    elsewhere nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError):  # a C library without mallopt, e.g. musl
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, LARGEST_MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
