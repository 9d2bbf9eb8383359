"""Loaded models kept per worker process, least recently used evicted first."""

from __future__ import annotations

import gc
import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import Any

from fractal import Spec2Fractal

__all__ = ["ModelCache"]

logger = logging.getLogger(__name__)


class ModelCache:
    def __init__(self, size: int = 1, *, device: str | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        self.size = size
        self.device = device
        # Spec2Fractal's keyword options for every model: hires_factor, tile_size,
        # tile_overlap, memory_limit.
        self.options = dict(options or {})
        self._models: OrderedDict[str, Spec2Fractal] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many times a model was actually loaded (for tests and metrics)
        self.loads_by_model: Counter[str] = Counter()  # the same, per model (routing)

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
            model = Spec2Fractal(name, device=self.device, **self.options)
            self.loads += 1
            self.loads_by_model[name] += 1
            self._models[name] = model
            return model

    def speed(self) -> dict[str, dict[str, Any]]:
        """Each loaded diffusion model's speed options as applied, with the graphs
        torch.compile made and how many of them came after the warm-up (recompilations,
        which /metrics shows: a count that grows means requests pay for compiling)."""
        with self._lock:
            models = list(self._models.items())
        speed = {}
        for name, model in models:
            applied = getattr(model.backend, "speed", None)  # the engine has none
            if applied is None:
                continue
            compiler = getattr(model.backend, "compiler", None)
            speed[name] = {**applied, "compiled_graphs": compiler.graphs if compiler else 0,
                           "recompilations": compiler.after_warmup if compiler else 0}
        return speed

    def loaded(self) -> list[str]:
        """The models held now, least recently used first."""
        with self._lock:
            return list(self._models)
