"""A batch file read into items: each a checked request, or the error that stops it.

``.txt``: one prompt a line (blank lines and ``#`` comments skipped). ``.csv``: a header row
naming request fields, then one item a row, each cell converted to its field's type (empty
cells are left out). ``.jsonl``: one request object a line.

An item is identified by :func:`request_hash`: the sha256 of its request as canonical JSON,
with the model it will be rendered by filled in, so neither its place in the file nor the
file's name is part of it. An item without a seed gets one derived from that hash.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fractal.errors import InvalidRequestError
from fractal.request import GenerationRequest
from fractal.validation import MAX_SEED, check_request
from spec2fractal.batch.manifest import BatchError

__all__ = [
    "EXTENSIONS",
    "FIELDS",
    "Item",
    "canonical_json",
    "derive_seed",
    "read_items",
    "request_hash",
]

EXTENSIONS = (".txt", ".csv", ".jsonl")
FIELDS = tuple(field.name for field in dataclasses.fields(GenerationRequest))
INT_FIELDS = frozenset({"width", "height", "steps", "seed", "n", "mask_blur", "padding"})
FLOAT_FIELDS = frozenset({"guidance", "texture", "strength", "style_strength"})
ALIASES = {"content": "prompt"}  # the service's name for the prompt
# One colour: a hex code or name, or a CSS function such as rgb(1, 2, 3) kept whole.
_COLOR_TOKEN = re.compile(r"[^\s,()]+(?:\([^)]*\))?")


@dataclass(frozen=True)
class Item:
    """One thing to render. ``request`` is None when the item could not be read or checked."""

    index: int  # 1-based position among the file's items; names the output files
    line: int  # where it starts in the file, for messages
    hash: str
    request: GenerationRequest | None  # as rendered: defaults applied, seed filled in
    error: str | None = None

    @property
    def images(self) -> int:
        return self.request.n if self.request is not None else 0

    def file_names(self) -> list[str]:
        stem = f"{self.index:05d}-{self.hash[:12]}"
        if self.images <= 1:
            return [f"{stem}.png"]
        return [f"{stem}-{k}.png" for k in range(1, self.images + 1)]

    def parameters(self) -> dict[str, Any] | None:
        """The request for the manifest; an input image, a style reference, a mask and
        control images are shown by their hash, not their bytes."""
        if self.request is None:
            return None
        data = self.request.to_dict()
        for name in ("image", "style_image", "mask"):
            if data.get(name) is not None:
                data[name] = _digest(data[name])
        if data.get("control"):
            data["control"] = [{**unit, "image": _digest(unit["image"])}
                               if isinstance(unit.get("image"), str) else unit
                               for unit in data["control"]]
        return data


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def canonical_json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_hash(request: GenerationRequest, model: str) -> str:
    """The item's identity: every field that changes the picture, and the model drawing it."""
    data = request.to_dict()
    data["model"] = (request.model or model).strip()
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def derive_seed(item_hash: str) -> int:
    """A seed for an item that gave none: the same item always gets the same seed."""
    return int(item_hash[:16], 16) % (MAX_SEED + 1)


def _bad_hash(raw: str) -> str:
    # A line that is not a request still needs an identity for the manifest.
    return hashlib.sha256(("unreadable:" + raw).encode()).hexdigest()


def _normalise(data: dict[str, Any]) -> dict[str, Any]:
    """One spelling per value, so equal requests hash equally (7 and 7.0 for guidance)."""
    for name in FLOAT_FIELDS:
        value = data.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            data[name] = float(value)
    return data


def _build(data: Mapping[str, Any], index: int, line: int, *, model: str,
           defaults: Mapping[str, Any]) -> Item:
    """An item from plain data: checked as the library checks it; the error names the field."""
    try:
        if not isinstance(data, Mapping):
            raise InvalidRequestError("request", data, "must be a JSON object of options")
        fields = {ALIASES.get(key, key): value for key, value in data.items()}
        if "content" in data and "prompt" in data and data["content"] != data["prompt"]:
            raise InvalidRequestError("prompt", data["prompt"],
                                      "is given twice (as `content` and `prompt`)")
        for key, value in defaults.items():
            if fields.get(key) is None:
                fields[key] = value
        given = GenerationRequest.from_dict(_normalise(fields))
        check_request(given)
    except InvalidRequestError as exc:
        raw = canonical_json(data) if isinstance(data, Mapping) else repr(data)
        return Item(index, line, _bad_hash(raw), None, str(exc))
    except TypeError as exc:  # a value JSON allows but a field cannot hold (e.g. colors: 3)
        raw = canonical_json(data)
        return Item(index, line, _bad_hash(raw), None, f"`request` is malformed: {exc}")
    item_hash = request_hash(given, model)
    request = given if given.seed is not None else dataclasses.replace(
        given, seed=derive_seed(item_hash))
    return Item(index, line, item_hash, request)


def _txt(path: Path) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    with path.open(encoding="utf-8-sig") as lines:
        for number, text in enumerate(lines, 1):
            prompt = text.strip()
            if prompt and not prompt.startswith("#"):
                yield number, {"prompt": prompt}


def _jsonl(path: Path) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    with path.open(encoding="utf-8-sig") as lines:
        for number, text in enumerate(lines, 1):
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, f"not valid JSON: {exc.msg} (column {exc.colno})"


def _cell(name: str, text: str) -> Any:
    if name in INT_FIELDS:
        try:
            return int(text)
        except ValueError:
            raise InvalidRequestError(name, text, "must be a whole number") from None
    if name in FLOAT_FIELDS:
        try:
            return float(text)
        except ValueError:
            raise InvalidRequestError(name, text, "must be a number") from None
    if name == "colors":
        return _COLOR_TOKEN.findall(text)
    return text


def csv_header(path: Path) -> list[str]:
    """The column names, checked: an unknown column is the file's mistake, not each row's."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise BatchError(f"{path}: empty; a .csv file starts with a header row of options")
    names = [name.strip().lower() for name in header]
    for name in names:
        if ALIASES.get(name, name) not in FIELDS:
            raise BatchError(f"{path}: column `{name}` is not a generation option; valid "
                             f"columns: {', '.join(sorted(FIELDS))}")
    fields = [ALIASES.get(name, name) for name in names]
    for name in fields:
        if fields.count(name) > 1:
            raise BatchError(f"{path}: column `{name}` appears twice in the header")
    return names


def _csv(path: Path) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    names = csv_header(path)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        start = reader.line_num + 1
        for row in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(names):
                yield line, (f"the row has {len(row)} values but the header names "
                             f"{len(names)} columns")
                continue
            data: dict[str, Any] = {}
            try:
                for name, text in zip(names, row, strict=False):
                    if text.strip():
                        data[ALIASES.get(name, name)] = _cell(name, text.strip())
            except InvalidRequestError as exc:
                yield line, str(exc)
                continue
            yield line, data


def read_items(path: Path, *, model: str,
               defaults: Mapping[str, Any] | None = None) -> list[Item]:
    """Every item of a batch file, in order. ``model`` is the one used when an item names none;
    ``defaults`` fill fields an item leaves out (and so are part of its hash)."""
    reader = {".txt": _txt, ".csv": _csv, ".jsonl": _jsonl}[path.suffix.lower()]
    items: list[Item] = []
    for index, (line, data) in enumerate(reader(path), 1):
        if isinstance(data, str):  # the line could not even be read as a request
            items.append(Item(index, line, _bad_hash(f"{line}:{data}"), None, data))
        else:
            items.append(_build(data, index, line, model=model, defaults=defaults or {}))
    return items
