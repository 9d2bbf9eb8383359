"""Loaded models kept per worker process, least recently used evicted first."""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict

from fractal import Spec2Fractal

__all__ = ["ModelCache"]

logger = logging.getLogger(__name__)


class ModelCache:
    def __init__(self, size: int = 1, *, device: str | None = None,
                 memory_limit: int | None = None) -> None:
        self.size = size
        self.device = device
        self.memory_limit = memory_limit  # bytes a model may use (None: the device's free)
        self._models: OrderedDict[str, Spec2Fractal] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many times a model was actually loaded (for tests and metrics)

    def get(self, name: str) -> Spec2Fractal:
        with self._lock:
            if name in self._models:
                self._models.move_to_end(name)
                return self._models[name]
            while len(self._models) >= self.size:
                evicted, _ = self._models.popitem(last=False)
                logger.info("unloading model %s", evicted)
                gc.collect()  # free the weights before the next model takes their memory
            logger.info("loading model %s", name)
            model = Spec2Fractal(name, device=self.device, memory_limit=self.memory_limit)
            self.loads += 1
            self._models[name] = model
            return model
