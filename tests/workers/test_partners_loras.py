"""Co-rendering partners share one LoRA set (issue #21): a job with other LoRAs, by name,
by prompt tag or in a caller's own style object, is not claimed as a partner."""

from __future__ import annotations

from typing import Any

from workers.db import Job
from workers.partners import corender_key

BASE = {"input_type": "text", "prompt": "a heron", "width": 64, "height": 64}


def _job(**request: Any) -> Job:
    return Job(id="j", model="tiny", request={**BASE, **request})


def test_partners_need_the_same_loras() -> None:
    plain = corender_key(_job())
    assert corender_key(_job(prompt="a crane")) == plain  # prompts may differ
    inked = corender_key(_job(loras=[{"name": "ink", "weight": 0.8}]))
    assert inked != plain
    assert corender_key(_job(loras=[{"name": "ink", "weight": 0.5}])) != inked
    assert corender_key(_job(prompt="a heron <lora:ink:0.8>")) != plain
    assert corender_key(_job(prompt="a crane <lora:INK:0.8>")) == \
        corender_key(_job(prompt="<lora:ink:0.8> a heron"))
    style = {"name": "Ink", "prompt": "{prompt}", "loras": [{"name": "ink", "weight": 1}]}
    assert corender_key(_job(style=style)) != corender_key(_job(style={**style, "loras": []}))
    assert corender_key(_job(prompt="<lora:../x:1>")) != plain  # unreadable: never a partner
