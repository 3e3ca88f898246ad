"""Wall time and peak memory of a block of work (for the benchmark report)."""

from __future__ import annotations

import time
from contextlib import contextmanager


def status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # Linux: VmHWM (peak resident memory) := current resident memory
        return True
    except OSError:
        return False


@contextmanager
def measure():
    """``with measure() as m: ...`` then ``m["seconds"]``, ``m["peak_rss_mb"]`` (the process's peak resident
    memory during the block), ``m["peak_increase_mb"]`` (over the memory before it) and, when CUDA was used,
    ``m["cuda_peak_mb"]``.

    On Linux the peak is the kernel's high-water mark (VmHWM, reset at the start); elsewhere a psutil thread
    samples the resident memory every 20 ms.
    """
    import threading

    out: dict = {}
    sampler = None
    before = status_bytes("VmRSS:")
    exact = before is not None and reset_peak()
    if not exact:
        import psutil

        proc, halt = psutil.Process(), threading.Event()
        before = proc.memory_info().rss
        peak = [before]

        def sample():
            while not halt.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                halt.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    cuda = False
    try:
        import torch

        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
    except ImportError:
        pass
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = round(time.perf_counter() - t0, 3)
        if exact:
            peak_b = status_bytes("VmHWM:") or before
        else:
            halt.set()
            sampler.join()
            peak_b = max(peak[0], proc.memory_info().rss)
        out["peak_rss_mb"] = round(peak_b / 2**20, 1)
        out["peak_increase_mb"] = round(max(peak_b - before, 0) / 2**20, 1)
        if cuda:
            import torch

            out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
