"""The project's one exponential backoff: webhook deliveries (``workers.webhooks``) and the
client's retries (``spec2fractal.client``, which may import workers; workers may not import
it) wait by it. S3 calls have botocore's own retry modes instead."""

from __future__ import annotations

import random

__all__ = ["exponential_backoff"]


def exponential_backoff(attempt: int, first: float, most: float, *,
                        jitter: float = 0.25) -> float:
    """Seconds to wait before retry ``attempt`` (0 for the first): ``first`` doubled per
    attempt, times a random factor in [1 - jitter, 1 + jitter) so callers that failed
    together do not come back together; at most ``most``."""
    factor = 1 - jitter + 2 * jitter * random.random()
    # The exponent is bounded: a float overflows long before any sane retry count.
    return min(most, first * 2.0 ** min(attempt, 64) * factor)
