"""A Python client for a Spec-2-Fractal server.

>>> from spec2fractal.client import Spec2FractalClient
>>> client = Spec2FractalClient("http://127.0.0.1:8000")  # key: $SPEC2FRACTAL_API_KEY
>>> result = client.images.generate("a lighthouse at dusk", n=2, width=512, height=512)
>>> result.images()[0].save("lighthouse.png")

``AsyncSpec2FractalClient`` is the same for asyncio. It needs only httpx, Pillow and
pydantic: importing it loads no model code, web framework or queue.
"""

from spec2fractal.client.async_client import AsyncSpec2FractalClient
from spec2fractal.client.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    JobCancelledError,
    JobFailedError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    UnprocessableEntityError,
    ValidationError,
)
from spec2fractal.client.results import AsyncImageResult, ImageResult
from spec2fractal.client.sync_client import Spec2FractalClient
from spec2fractal.client.types import (
    Batch,
    BatchItemResult,
    BatchPage,
    Job,
    JobEvent,
    JobPage,
    LoraInfo,
    Output,
    StyleInfo,
)

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncImageResult",
    "AsyncSpec2FractalClient",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "BatchItemResult",
    "BatchPage",
    "ConflictError",
    "ImageResult",
    "InternalServerError",
    "Job",
    "JobCancelledError",
    "JobEvent",
    "JobFailedError",
    "JobPage",
    "LoraInfo",
    "NotFoundError",
    "Output",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "Spec2FractalClient",
    "StyleInfo",
    "UnprocessableEntityError",
    "ValidationError",
]
