"""Several requests in one pipeline call: same pictures, per-request progress, cancel, errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fractal import (
    GenerationCancelled,
    GenerationRequest,
    InvalidRequestError,
    Spec2Fractal,
    image_to_data_url,
    read_record,
)
from tests.render_calls import render_calls


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def test_batched_matches_unbatched_within_one(sd_model: Spec2Fractal) -> None:
    requests = [
        GenerationRequest(prompt="a lake at dawn", steps=4, seed=10),
        GenerationRequest(prompt="a red castle", steps=4, seed=20, n=2, style="Watercolor"),
        GenerationRequest(prompt="snowy peaks", negative_prompt="blurry", steps=4, seed=30),
    ]
    with render_calls(sd_model) as calls:
        batched = sd_model.generate_many(requests)
    assert calls == [3]  # one pipeline call for all three requests
    for request, images in zip(requests, batched, strict=True):
        alone = sd_model.generate(request)
        assert len(images) == len(alone) == request.n
        for mine, theirs in zip(images, alone, strict=True):
            assert np.abs(pixels(mine) - pixels(theirs)).max() <= 1
            assert read_record(mine) == read_record(theirs)


def test_incompatible_requests_are_split_into_calls(sd_model: Spec2Fractal) -> None:
    source = image_to_data_url(Image.new("RGB", (64, 64), (0, 90, 200)))
    results = sd_model.generate_many([
        {"prompt": "a lake", "steps": 3, "seed": 1},
        {"prompt": "a lake", "steps": 4, "seed": 1},
        {"input_type": "image", "image": source, "strength": 0.5, "steps": 4, "seed": 1},
    ])
    assert [len(images) for images in results] == [1, 1, 1]
    assert read_record(results[0][0]).steps == 3 and read_record(results[1][0]).steps == 4
    assert read_record(results[2][0]).input_type == "image"


def test_one_bad_request_fails_alone(sd_model: Spec2Fractal) -> None:
    results = sd_model.generate_many([
        {"prompt": "a lake", "steps": 3, "seed": 1},
        {"prompt": "a lake", "steps": 3, "width": 100},
        {"prompt": "a lake", "steps": 3, "style": "nope"},
    ])
    assert isinstance(results[0], list) and len(results[0]) == 1
    assert isinstance(results[1], InvalidRequestError) and results[1].argument == "width"
    assert isinstance(results[2], InvalidRequestError) and results[2].argument == "style"


def test_progress_and_cancel_stay_per_request(sd_model: Spec2Fractal) -> None:
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}

    def progress(index: int):
        return lambda step, total, preview: seen[index].append(step)

    stop_second = {"now": False}

    def cancel_second() -> bool:
        return stop_second["now"]

    def watch(step: int, total: int, preview: Image.Image | None) -> None:
        seen[0].append(step)
        if step == 2:
            stop_second["now"] = True

    requests = [{"prompt": f"a lake {k}", "steps": 5, "seed": k} for k in range(3)]
    results = sd_model.generate_many(
        requests, on_progress=[watch, progress(1), progress(2)],
        cancel=[None, cancel_second, lambda: True],
    )
    assert isinstance(results[0], list) and isinstance(results[1], GenerationCancelled)
    assert isinstance(results[2], GenerationCancelled) and results[2].step == 0
    assert seen[0] == [1, 2, 3, 4, 5]
    # Request 0 reports step 2 first and sets the flag, so request 1 stops before step 2.
    assert seen[1] == [1] and seen[2] == []


def test_all_cancelled_stops_the_call(sd_model: Spec2Fractal) -> None:
    steps: list[int] = []
    flag = {"stop": False}

    def on_progress(step: int, total: int, preview: Image.Image | None) -> None:
        steps.append(step)
        flag["stop"] = True

    results = sd_model.generate_many(
        [{"prompt": "a lake", "steps": 20, "seed": 1}], on_progress=[on_progress],
        cancel=[lambda: flag["stop"]])
    assert isinstance(results[0], GenerationCancelled)
    assert steps == [1]


def test_engine_renders_many_too(engine_model: Spec2Fractal) -> None:
    results = engine_model.generate_many([{"prompt": "julia", "width": 64, "height": 64,
                                           "seed": s} for s in (1, 2)])
    alone = engine_model.generate({"prompt": "julia", "width": 64, "height": 64, "seed": 2})
    assert np.array_equal(pixels(results[1][0]), pixels(alone[0]))


@pytest.mark.parametrize("count", [1, 4])
def test_a_batch_of_one_or_more_keeps_records(sd_model: Spec2Fractal, count: int) -> None:
    results = sd_model.generate_many([{"prompt": "a lake", "steps": 2, "seed": k}
                                      for k in range(count)])
    assert [read_record(images[0]).seed for images in results] == list(range(count))
