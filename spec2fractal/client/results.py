"""A render's result: the finished job, its image URLs, and helpers that download them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from PIL import Image
from pydantic import BaseModel, PrivateAttr

from spec2fractal.client._calls import docs_from
from spec2fractal.client._core import open_image
from spec2fractal.client.types import Job

__all__ = ["AsyncImageResult", "ImageResult"]


class _Result(BaseModel):
    job: Job

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def urls(self) -> list[str]:
        """Signed URLs of the images, in order (they expire; ``client.jobs.get`` signs anew)."""
        return [output.url for output in sorted(self.job.outputs, key=lambda out: out.index)]

    @property
    def seeds(self) -> list[int | None]:
        return [output.seed for output in sorted(self.job.outputs, key=lambda out: out.index)]

    def _save(self, folder: str | Path, prefix: str | None, files: list[bytes]) -> list[Path]:
        """Write the downloaded ``files`` as ``<folder>/<prefix or job id>-<index>.<format>``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        stem = prefix or self.job.id
        paths = [folder / f"{stem}-{out.index}.{'jpg' if out.format == 'jpeg' else out.format}"
                 for out in sorted(self.job.outputs, key=lambda out: out.index)]
        for path, data in zip(paths, files, strict=True):
            path.write_bytes(data)
        return paths


class ImageResult(_Result):
    _fetch: Callable[[str], bytes] = PrivateAttr()

    def bind(self, fetch: Callable[[str], bytes]) -> ImageResult:
        self._fetch = fetch
        return self

    def download(self) -> list[bytes]:
        """The image files as the server stored them (PNGs carry their generation record)."""
        return [self._fetch(url) for url in self.urls]

    def images(self) -> list[Image.Image]:
        """The images as PIL images, with the record in ``image.info`` as local renders have."""
        return [open_image(data) for data in self.download()]

    def save(self, folder: str | Path, prefix: str | None = None) -> list[Path]:
        """The images as files in ``folder``, named ``<prefix or job id>-<index>.<format>``."""
        return self._save(folder, prefix, self.download())


@docs_from(ImageResult)
class AsyncImageResult(_Result):
    _fetch: Callable[[str], Awaitable[bytes]] = PrivateAttr()

    def bind(self, fetch: Callable[[str], Awaitable[bytes]]) -> AsyncImageResult:
        self._fetch = fetch
        return self

    async def download(self) -> list[bytes]:
        return [await self._fetch(url) for url in self.urls]

    async def images(self) -> list[Image.Image]:
        return [open_image(data) for data in await self.download()]

    async def save(self, folder: str | Path, prefix: str | None = None) -> list[Path]:
        return self._save(folder, prefix, await self.download())
