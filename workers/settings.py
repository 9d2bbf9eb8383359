"""The service's one configuration, read from ``SPEC2FRACTAL_*`` variables when first asked for.

Nothing configured means the embedded one-machine shape: SQLite (which holds the queue's
messages too) and images under ``data_dir``. Setting ``broker_url``, ``database_url`` and
``storage_url`` switches to Redis, PostgreSQL and S3 with no code change.
"""

from __future__ import annotations

import ipaddress
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, ByteSize, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "get_settings", "is_loopback"]

ENV_PREFIX = "SPEC2FRACTAL_"


def _renamed(name: str, old: str) -> AliasChoices:
    """A setting's name and its former one, as keyword arguments and as variables (an alias
    is matched as given: the prefix is not added to it)."""
    return AliasChoices(name, f"{ENV_PREFIX}{name}", old, f"{ENV_PREFIX}{old}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore",
                                      populate_by_name=True)

    data_dir: Path = Field(default=Path.home() / ".spec2fractal",
                           description="Home of the embedded mode: database, images, queue.")
    broker_url: str | None = Field(default=None,
                                   description="Celery broker, e.g. redis://host:6379/0. "
                                               "Unset: the queue is a table of the job "
                                               "database, and no Celery runs.")
    database_url: str | None = Field(default=None,
                                     description="SQLAlchemy URL. Unset: SQLite in data_dir.")
    storage_url: str | None = Field(default=None,
                                    description="s3://bucket[/prefix] or a folder. "
                                                "Unset: data_dir/images.")
    s3_endpoint_url: str | None = Field(default=None, description="MinIO, SeaweedFS, ...")
    s3_public_endpoint_url: str | None = Field(
        default=None, description="The S3 endpoint as clients reach it, for presigned URLs "
                                  "(e.g. http://localhost:9000). Unset: s3_endpoint_url.")
    s3_region: str = "us-east-1"
    model: str = Field(default="fractal", description="The default model of a request.")
    models: Annotated[list[str], NoDecode] = Field(default_factory=list,
                              description="More models requests may name (hub ids or "
                                          "folders); requests can name no other.")
    sync_timeout: float = Field(default=60.0, ge=0,
                                description="How long POST /generate waits before a 202.")
    url_expiry: int = Field(default=3600, ge=1, le=7 * 24 * 3600,
                            description="Seconds an image URL stays valid.")
    public_url: str | None = Field(default=None,
                                   description="Base URL clients reach the API at, for every "
                                               "link it hands out; required when `host` is "
                                               "not a loopback address.")
    secret_key: str | None = Field(default=None,
                                   description="Signs local image URLs. Unset: generated once "
                                               "and kept in data_dir.")
    max_queued_jobs: int = Field(default=1000, ge=1,
                                 description="Above this, new jobs get 503 and Retry-After.")
    max_batch_items: int = Field(default=10_000, ge=1,
                                 description="Most items one POST /batches may create.")
    max_queued_batch_items: int = Field(default=20_000, ge=1,
                                        description="Batch items waiting, all keys together; "
                                                    "a batch that would pass it gets 503 "
                                                    "and Retry-After.")
    model_cache_size: int = Field(default=1, ge=1,
                                  description="Models a worker keeps loaded (LRU).")
    device: str | None = Field(default=None, description="Worker device; unset: auto.")
    memory_limit: ByteSize | None = Field(
        default=None, gt=0, description="Memory a worker's diffusion model may use on its device, "
                                  "weights included, e.g. `6GiB` (bytes, or with a unit: "
                                  "KiB, MiB, GiB; kB, MB, GB). A render estimated to need "
                                  "more is refused with a 422 naming its size and the "
                                  "largest that fits. Unset: the device's free memory.")
    warmup_model: str | None = Field(default=None,
                                     description="Model a worker loads before its first job, "
                                                 "besides (with a broker) those it serves; "
                                                 "embedded: instead of the default model.")
    task_soft_time_limit: int = Field(default=600, ge=1,
                                      description="A render still going after this many seconds "
                                                  "is stopped at its next step and fails.")
    task_time_limit: int = Field(default=660, ge=1,
                                 description="Hard limit; Redis re-delivers a task whose worker "
                                             "went silent for twice this long.")
    png_compress_level: int = Field(default=1, ge=0, le=9)
    # Co-rendering: several compatible queued jobs in one pipeline call (not the batches of
    # POST /batches). The old names (max_batch_size, batch_wait_ms) still work.
    max_corender_size: int = Field(
        default=4, ge=1, le=64, validation_alias=_renamed("max_corender_size", "max_batch_size"),
        description="A worker renders up to this many compatible queued jobs in one pipeline "
                    "call (1: off). Alias: SPEC2FRACTAL_MAX_BATCH_SIZE.")
    corender_wait_ms: int = Field(
        default=0, ge=0, le=10_000, validation_alias=_renamed("corender_wait_ms", "batch_wait_ms"),
        description="How long a worker waits for compatible jobs to render with; 0 takes "
                    "only what is queued. Alias: SPEC2FRACTAL_BATCH_WAIT_MS.")
    # --- high resolution (issue #18) ---
    hires_factor: float = Field(default=1.5, ge=1.0, le=64.0,
                                description="A text-to-image size over this many times the "
                                            "model's native area renders in two passes "
                                            "(native size, upscaled, refined).")
    tile_size: int | None = Field(default=None, ge=16, le=4096, multiple_of=8,
                                  description="A diffusion pass with a side over this many "
                                              "pixels denoises and decodes in tiles of it. "
                                              "Unset: the model's native side.")
    tile_overlap: int | None = Field(default=None, ge=8, le=2048, multiple_of=8,
                                     description="Pixels neighbouring tiles share (at most "
                                                 "half a tile). Unset: a quarter tile.")
    # --- style reference and control (issue #19) ---
    adapters: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=dict,
        description="Each model family's IP-Adapter and ControlNets, as JSON: "
                    '`{"sd15": {"ip_adapter": {"model": ..., "weight_name": ..., '
                    '"subfolder": ..., "image_encoder": ...}, "controlnets": {"canny": ...}}}` '
                    "(families: sd15, sd2, sdxl, sd3, flux). Loaded once per worker with "
                    "the model. Unset: no style reference or control on diffusion models "
                    "(the built-in engine needs none).")
    # --- LoRA adapters and user styles (issue #21) ---
    lora_dir: Path | None = Field(
        default=None, description="The folder of LoRA files (`name.safetensors`) requests "
                                  "name in `loras` or `<lora:name:weight>` tags; shared by the "
                                  "API (lists, uploads) and the workers (load). Unset: none.")
    lora_hub: bool = Field(default=False,
                           description="Whether requests may name hub ids (owner/repo) as "
                                       "LoRAs. Off: a tenant must not make workers download "
                                       "arbitrary files.")
    # --- speed options and memory modes (issue #22) ---
    dtype: Literal["float16", "bfloat16", "float32"] | None = Field(
        default=None, description="The model's weights and activations. Unset: bf16 on GPUs "
                                  "that have it, else fp16; fp32 on CPU.")
    compile: str | None = Field(
        default=None, description="torch.compile the denoiser's repeated blocks and the VAE "
                                  "decoder with this backend (`inductor` on GPUs; `true` "
                                  "means inductor). Unset/`false`: not compiled.")
    channels_last: bool = Field(default=False, description="UNet and VAE convolutions in "
                                                           "channels-last (NHWC) memory format.")
    fuse_qkv: bool = Field(default=False, description="Fuse each attention's Q, K and V "
                                                      "projections (requests with LoRAs are "
                                                      "then refused).")
    vae: str | None = Field(default=None, description="A VAE folder or hub id replacing the "
                                                      "model's (e.g. SDXL's fp16-fix VAE).")
    step_cache: Literal["none", "first_block", "deep", "auto"] = Field(
        default="none", description="A step cache, faster at a quality cost: `first_block` "
                                    "(First Block Cache) on transformer models that take it "
                                    "(FLUX; not SD3 in diffusers 0.42), "
                                    "`deep` (DeepCache) on UNet models (SD 1.x/2.x, SDXL), "
                                    "`auto` whichever the model takes. A model refuses the "
                                    "other kind at load.")
    step_cache_threshold: float = Field(default=0.05, gt=0.0, le=1.0,
                                        description="First Block Cache's threshold: higher "
                                                    "is faster and further from the plain "
                                                    "render.")
    step_cache_interval: int = Field(default=3, ge=2, le=10,
                                     description="DeepCache's interval: the UNet's deep blocks "
                                                 "run every this many steps, reused between; "
                                                 "higher is faster and further from the "
                                                 "plain render.")
    offload: Literal["none", "model", "sequential", "auto"] = Field(
        default="none", description="Weights kept in RAM and moved to the GPU per component "
                                    "(model) or per layer (sequential); auto chooses from "
                                    "the GPU's free memory. A no-op on CPU.")
    warmup_sizes: Annotated[list[list[int]], NoDecode] = Field(
        default_factory=list, description="Sizes rendered once at load (`1024x1024,832x1216`) "
                                          "so a compiled model does not compile on a request.")
    lora_upload_max_bytes: ByteSize = Field(default=ByteSize(512 * 1024 * 1024), ge=1,
                                            description="The largest LoRA file POST /loras "
                                                        "accepts (`512MiB`, `2GB`, bytes).")
    styles_files: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="TOML files of the operator's styles (the shape of the built-in "
                    "`fractal/styles/builtin.toml`, LoRAs included), read by the API at "
                    "start; a list (`a.toml,b.toml` or JSON). A request naming one carries "
                    "it to the workers whole, so they need not have the files.")
    max_styles_per_key: int = Field(default=200, ge=0,
                                    description="How many styles of its own each key (or the "
                                                "one owner when auth is off) may keep.")

    # --- CPU serving: several embedded workers (issue #22) ---
    embedded_workers: int | None = Field(
        default=None, ge=1, le=64,
        description="Worker processes `spec2fractal serve` starts with no broker "
                    "(`--workers`). Unset: on a CPU-only machine, one per core up to 4; "
                    "with a GPU, 1.")
    worker_threads: int | None = Field(
        default=None, ge=1, le=1024,
        description="Threads torch and BLAS use in one worker process. Unset: the cores "
                    "shared out among the embedded workers (a worker started alone: "
                    "torch's own choice).")
    # --- security (who may call, and how much) ---
    host: str = Field(default="127.0.0.1",
                      description="Address the API listens on; `serve --host` sets it.")
    auth: Literal["auto", "required", "off"] = Field(
        default="auto", description="API keys: `auto` requires them whenever `host` is not a "
                                    "loopback address; `required` always; `off` never.")
    rate_limit: str = Field(default="20/second;600/minute",
                            description="Requests per API key (the `limits` syntax, e.g. "
                                        "`10/second;300/minute`); empty: no limit.")
    max_jobs_per_key: int = Field(default=16, ge=1,
                                  description="Unfinished interactive jobs one key may have; "
                                              "more gets 429.")
    max_streams_per_key: int = Field(default=32, ge=1,
                                     description="Event streams (GET /jobs/{id}/events) one "
                                                 "key may hold open in one API process; "
                                                 "more gets 429.")
    max_batch_items_per_key: int = Field(default=10_000, ge=1,
                                         description="Unfinished batch items one key may "
                                                     "have; a batch that would pass it gets "
                                                     "429.")
    header_timeout: float = Field(default=10.0, gt=0, le=300,
                                  description="Seconds a connection has to send a request's "
                                              "headers (from opening, or from the request's "
                                              "first byte); then 408 and closed.")
    keep_alive_timeout: int = Field(default=5, ge=1, le=300,
                                    description="Seconds an idle kept-alive connection stays "
                                                "open between requests.")
    max_connections: int = Field(default=1000, ge=1,
                                 description="Open connections (event streams included) "
                                             "past which new requests get 503.")
    idempotency_ttl: int = Field(default=24 * 3600, ge=60,
                                 description="Seconds an Idempotency-Key is remembered.")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list,
                                    description="Browser origins allowed to call the API.")
    allow_image_urls: bool = Field(default=False,
                                   description="Accept `image_url` inputs, fetched only from "
                                               "public (global) addresses.")
    fetch_timeout: float = Field(default=10.0, gt=0, le=120,
                                 description="Timeout of one image-URL fetch or webhook call.")
    # --- webhooks ---
    webhook_max_attempts: int = Field(default=8, ge=1, le=30,
                                      description="Deliveries tried per webhook event.")
    webhook_backoff: float = Field(default=2.0, gt=0,
                                   description="First retry delay (s); doubles, with jitter.")
    webhook_allow_private: bool = Field(default=False,
                                        description="Let webhooks and image URLs reach private "
                                                    "addresses (tests, closed networks).")
    # --- reliability ---
    max_attempts: int = Field(default=3, ge=1,
                              description="A job whose worker dies this many times fails.")
    job_lease: int = Field(default=120, ge=1,
                           description="A running job whose worker has not written for this "
                                       "many seconds is presumed lost and re-queued.")
    queued_lease: int = Field(default=300, ge=1,
                              description="A job queued this long with no worker taking it is "
                                          "sent to the broker again.")
    reconcile_interval: float = Field(default=30.0, gt=0,
                                      description="How often the reconciler looks (s).")
    storage_retries: int = Field(default=4, ge=0,
                                 description="Retries of a failed upload, with backoff.")
    requeue_delay: float = Field(default=10.0, ge=0,
                                 description="A job whose input image storage could not "
                                             "serve (unreachable) is queued again, and tried "
                                             "again after this many seconds.")

    # --- model-aware routing (issue #22) ---
    worker_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="The models this worker serves (`a,b` or a JSON list; `spec2fractal "
                    "worker --models`): it consumes only their queues and loads them before "
                    "its first job. Unset: every configured model (`model`, the engine, "
                    "`models`).")
    worker_presence_interval: float = Field(
        default=5.0, gt=0, le=3600,
        description="How often a worker writes what it serves and holds loaded to the job "
                    "database (s).")
    worker_presence_ttl: float = Field(
        default=30.0, gt=0,
        description="A worker not heard from for this long (s) no longer counts as live "
                    "in GET /models, /ready and POST /generate's check.")
    refuse_unserved_models: bool = Field(
        default=True,
        description="With a broker: POST /generate and POST /batches for a model no live "
                    "worker serves answer 503 with Retry-After instead of queueing.")

    @model_validator(mode="after")
    def _limits_in_order(self) -> Settings:
        # Celery rejects (and drops) a retried task whose soft limit is above its hard one,
        # so lowering only the hard limit lowers the soft one with it.
        self.task_soft_time_limit = min(self.task_soft_time_limit, self.task_time_limit)
        if self.tile_size is not None and self.tile_overlap is not None \
                and self.tile_overlap * 2 > self.tile_size:
            raise ValueError(f"tile_overlap ({self.tile_overlap}) must be at most half of "
                             f"tile_size ({self.tile_size})")
        return self

    @field_validator("models", "cors_origins", "styles_files", "worker_models",
                     mode="before")
    @classmethod
    def _list(cls, value: object) -> object:
        # From the environment: a JSON list, or the friendlier `a,b,c`.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator("adapters", mode="before")
    @classmethod
    def _adapters(cls, value: object) -> object:
        from fractal.adapters import parse_adapters
        from fractal.errors import InvalidRequestError

        try:
            parse_adapters(value)  # type: ignore[arg-type]
        except InvalidRequestError as exc:
            raise ValueError(str(exc)) from None
        return json.loads(value) if isinstance(value, str) and value.strip() else value or {}

    @field_validator("compile", mode="before")
    @classmethod
    def _compile(cls, value: object) -> object:
        words = {"true": "inductor", "1": "inductor", "yes": "inductor", "on": "inductor",
                 "false": None, "0": None, "no": None, "off": None, "none": None, "": None}
        if isinstance(value, bool) or (isinstance(value, str)
                                       and value.strip().lower() in words):
            return words[str(value).strip().lower()]
        return value.strip() if isinstance(value, str) else value

    @field_validator("warmup_sizes", mode="before")
    @classmethod
    def _warmup_sizes(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            try:
                return [[int(side) for side in item.lower().split("x", 1)]
                        for item in text.split(",") if item.strip()]
            except ValueError:
                raise ValueError("give sizes as WIDTHxHEIGHT,WIDTHxHEIGHT") from None
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        # Every link the API hands out starts with it: an origin and an optional path.
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
                or parts.fragment or parts.username is not None:
            raise ValueError("give the URL clients reach the API at, like "
                             "https://images.example.com or http://host:8000/prefix")
        return value.strip().rstrip("/")

    @field_validator("data_dir", "lora_dir")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @property
    def auth_required(self) -> bool:
        if self.auth == "auto":
            return not is_loopback(self.host)
        return self.auth == "required"

    @property
    def model_options(self) -> dict[str, Any]:
        """Spec2Fractal's keyword options for every model a worker loads."""
        return {"hires_factor": self.hires_factor, "tile_size": self.tile_size,
                "tile_overlap": self.tile_overlap,
                "memory_limit": int(self.memory_limit) if self.memory_limit else None,
                "adapters": self.adapters or None, "lora_dir": self.lora_dir,
                "lora_hub": self.lora_hub, "speed": self.speed_options, "dtype": self.dtype}

    @property
    def speed_options(self) -> dict[str, Any]:
        """fractal.backends.speed's options (checked there, at load: this module and the
        API import no torch)."""
        return {"compile": self.compile, "channels_last": self.channels_last,
                "fuse_qkv": self.fuse_qkv, "vae": self.vae, "step_cache": self.step_cache,
                "step_cache_threshold": self.step_cache_threshold,
                "step_cache_interval": self.step_cache_interval, "offload": self.offload,
                "warmup": self.warmup_sizes}

    @property
    def embedded(self) -> bool:
        """No broker configured: the queue is a table of the job database and the worker a
        child of the server."""
        return self.broker_url is None

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'spec2fractal.db'}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or str(self.data_dir / "images")



def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 and ::1 listen to this machine only."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname other than localhost, or 0.0.0.0-like wildcards


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Built on first call, never at import time; tests clear it with ``cache_clear()``."""
    return Settings()
