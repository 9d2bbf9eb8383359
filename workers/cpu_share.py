"""How ``spec2fractal serve`` shares a CPU machine among its embedded worker processes.

One worker process on a CPU renders a small model with most cores idle: a denoising step's
tensors are too small to spread over threads well, and the rest of a job (the scheduler's
Python, PNG encoding, the database) runs on one thread. Several processes, each with its
share of the cores, render side by side without contending for the GIL or for each
other's threads. On a GPU the processes would only queue for the one device (and hold a
copy of the model each), so there the default stays one.

Imported by the API: no torch here (the worker applies its share in :func:`apply_threads`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from workers.settings import Settings

__all__ = ["AUTO_MAX_WORKERS", "THREAD_ENV", "apply_threads", "has_gpu", "thread_env",
           "usable_cores", "worker_count", "worker_threads"]

logger = logging.getLogger(__name__)

AUTO_MAX_WORKERS = 4  # each worker holds its own copy of the model in memory
# The thread pools' own variables, read when each library starts in the worker process.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def has_gpu(settings: Settings) -> bool:
    """Whether workers will render on an accelerator, told without importing torch: the
    configured device, else an NVIDIA driver's device nodes (Linux) or Apple silicon."""
    if settings.device is not None:
        return not settings.device.strip().lower().startswith("cpu")
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if Path("/dev/nvidiactl").exists() or Path("/dev/kfd").exists():  # CUDA, ROCm
        return True
    return os.uname().sysname == "Darwin" and os.uname().machine == "arm64"  # MPS


def worker_count(settings: Settings) -> int:
    """``embedded_workers``, or the default: one per core up to AUTO_MAX_WORKERS on a
    CPU-only machine, one with a GPU."""
    if settings.embedded_workers is not None:
        return settings.embedded_workers
    if has_gpu(settings):
        return 1
    return min(usable_cores(), AUTO_MAX_WORKERS)


def worker_threads(settings: Settings, workers: int) -> int | None:
    """Threads for each of ``workers`` processes: ``worker_threads``, or the cores shared
    out (at least one each); None for a lone worker left to torch's own choice."""
    if settings.worker_threads is not None:
        return settings.worker_threads
    if workers <= 1:
        return None
    return max(1, usable_cores() // workers)


def thread_env(threads: int | None) -> dict[str, str]:
    """The environment variables that size a process's thread pools at ``threads``."""
    if threads is None:
        return {}
    return dict.fromkeys(THREAD_ENV, str(threads))


def apply_threads(threads: int | None) -> None:
    """In a worker process: torch's intra-op pool at ``threads`` (the environment from
    :func:`thread_env` sized OpenMP and BLAS already, before they started)."""
    if threads is None:
        return
    import torch

    torch.set_num_threads(threads)
    logger.info("worker %d renders with %d thread(s)", os.getpid(), threads)
