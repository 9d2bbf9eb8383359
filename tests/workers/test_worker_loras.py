"""LoRAs in the worker (issue #21): co-rendering partners share one LoRA set (a job with
other LoRAs, by name, by prompt tag or in a caller's own style object, is not claimed as a
partner), and hub LoRAs are refused unless the operator allows them."""

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


def test_a_worker_refuses_hub_loras_unless_allowed(tmp_path, database_url: str,  # type: ignore
                                                    tiny_sd) -> None:
    """A job that names a hub LoRA (however it was queued) fails naming the field, with no
    download, when SPEC2FRACTAL_LORA_HUB is off (the workers' models are loaded with
    ``lora_hub=False``); a style's hub LoRA too."""
    from workers.db import JobStatus, get_database
    from workers.db import jobs as job_store
    from workers.model_cache import ModelCache
    from workers.runner import WorkerContext, run_job
    from workers.settings import Settings
    from workers.storage.local import LocalStorage

    settings = Settings(data_dir=tmp_path, lora_dir=tmp_path / "loras", lora_hub=False)
    database = get_database(database_url)
    database.migrate()
    context = WorkerContext(database=database,
                            models=ModelCache(1, options=settings.model_options),
                            storage=LocalStorage(tmp_path / "images", secret=b"test"))
    style = {"name": "Hubbed", "prompt": "{prompt}",
             "loras": [{"name": "acme/ink", "weight": 1}]}
    cases = (({"loras": [{"name": "acme/ink", "weight": 1}]}, "loras[0].name"),
             ({"prompt": "a heron <lora:acme/ink/ink.safetensors:0.5>"}, "prompt"),
             ({"style": style}, "style.loras[0].name"))
    for extra, field in cases:
        with database.session() as session:
            job_id = job_store.create_job(session, job_id=job_store.new_job_id(),
                                          model=str(tiny_sd), request={
                                              "prompt": "a heron", "width": 64, "height": 64,
                                              "steps": 2, "seed": 1, **extra}).id
        assert run_job(job_id, context) == JobStatus.FAILED
        with database.session() as session:
            job = job_store.get_job(session, job_id)
        assert job.error_detail["field"] == field and "hub id" in job.error, job.error
