"""``Spec2FractalClient`` and ``AsyncSpec2FractalClient`` are one client in two flavours: the
same public methods with the same signatures (a coroutine on the async side), the same
docstrings, at every level a caller reaches (client, images, jobs, batches, results)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator

import pytest

from spec2fractal.client import (
    AsyncImageResult,
    AsyncSpec2FractalClient,
    ImageResult,
    Spec2FractalClient,
)

# What differs by flavour, as annotations spell it (sync name: async name).
FLAVOURED = {"ImageResult": "AsyncImageResult", "Iterator": "AsyncIterator",
             "httpx.Client": "httpx.AsyncClient",
             "Callable[[str], bytes]": "Callable[[str], Awaitable[bytes]]"}
# No I/O, so plain methods in both: a result is handed its client's download function.
PLAIN = {"bind"}
# Context managers: the same job, under the names each protocol wants.
CONTEXT = {"__enter__": "__aenter__", "__exit__": "__aexit__"}


def _public(cls: type) -> dict[str, object]:
    return {name: getattr(cls, name) for name in dir(cls)
            if not name.startswith("_") and callable(getattr(cls, name))}


def _as_async(annotation: str) -> str:
    for sync, asynchronous in FLAVOURED.items():
        annotation = annotation.replace(sync, asynchronous)
    return annotation


def _pairs() -> Iterator[tuple[str, type, type]]:
    sync = Spec2FractalClient("http://127.0.0.1:9", api_key="k")
    asynchronous = AsyncSpec2FractalClient("http://127.0.0.1:9", api_key="k")
    try:
        yield "client", Spec2FractalClient, AsyncSpec2FractalClient
        for part in ("images", "jobs", "batches", "styles", "loras"):
            yield part, type(getattr(sync, part)), type(getattr(asynchronous, part))
        yield "result", ImageResult, AsyncImageResult
    finally:
        sync.close()
        asyncio.run(asynchronous.close())


PAIRS = list(_pairs())


@pytest.mark.parametrize(("part", "sync", "asynchronous"), PAIRS, ids=[p[0] for p in PAIRS])
def test_both_flavours_have_the_same_methods_and_signatures(part: str, sync: type,
                                                            asynchronous: type) -> None:
    sync_methods, async_methods = _public(sync), _public(asynchronous)
    assert sorted(sync_methods) == sorted(async_methods), part
    for name, method in sync_methods.items():
        other = async_methods[name]
        where = f"{part}.{name}"
        mine, theirs = inspect.signature(method), inspect.signature(other)
        assert list(mine.parameters) == list(theirs.parameters), where
        for parameter in mine.parameters.values():
            twin = theirs.parameters[parameter.name]
            assert (parameter.kind, parameter.default) == (twin.kind, twin.default), \
                f"{where}({parameter.name})"
            assert _as_async(str(parameter.annotation)) == str(twin.annotation), \
                f"{where}({parameter.name})"
        assert _as_async(str(mine.return_annotation)) == str(theirs.return_annotation), where
        # pydantic's own methods (of the results) are shared, not flavoured.
        if other.__module__.startswith("spec2fractal.") and name not in PLAIN:
            assert not inspect.iscoroutinefunction(method), where
            assert not inspect.isasyncgenfunction(method), where
            assert inspect.iscoroutinefunction(other) or inspect.isasyncgenfunction(other), \
                where
            assert other.__doc__ == method.__doc__, f"{where}: documented once, the same"


def test_the_constructors_and_context_managers_match() -> None:
    sync = inspect.signature(Spec2FractalClient)
    asynchronous = inspect.signature(AsyncSpec2FractalClient)
    assert str(sync) == str(asynchronous)
    for plain, awaited in CONTEXT.items():
        assert hasattr(Spec2FractalClient, plain)
        assert inspect.iscoroutinefunction(getattr(AsyncSpec2FractalClient, awaited))
