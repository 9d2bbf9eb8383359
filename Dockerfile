# Spec-2-Fractal: one image for the API and the render workers (see docs/deploy.md).
#
#   docker build -t spec2fractal .
#   docker run --gpus all -p 8000:8000 -v spec2fractal-models:/models spec2fractal
#
# CUDA 12.4 runtime + cuDNN; Python 3.11 from the deadsnakes PPA (Ubuntu 22.04 ships 3.10).
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gnupg software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && apt-get purge -y --auto-remove software-properties-common gnupg \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3.11 -m venv "$VIRTUAL_ENV"

# torch's Linux wheels on PyPI bring their own CUDA 12 libraries: only the host driver is
# needed (NVIDIA Container Toolkit). Installed first, in its own layer, as it is the big one.
RUN pip install "torch>=2.1"

# Only what the package needs: no tests, no .git, no local data in the image.
WORKDIR /app
COPY pyproject.toml README.md ./
COPY fractal ./fractal
COPY spec2fractal ./spec2fractal
COPY workers ./workers
COPY api ./api
# Extras: postgres, the PostgreSQL driver (psycopg 3) of the compose file's
# SPEC2FRACTAL_DATABASE_URL=postgresql+psycopg://...; flower, the queue dashboard.
RUN pip install ".[postgres,flower]" && spec2fractal --help >/dev/null

# Non-root; models are downloaded to a volume at /models and survive new images.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin spec2fractal \
    && mkdir -p /models /data \
    && chown spec2fractal:spec2fractal /models /data
# Links and image URLs start with PUBLIC_URL (serve --host 0.0.0.0 requires one): right for
# `docker run -p 8000:8000` on this machine; set it to the address clients use elsewhere.
ENV HF_HOME=/models \
    SPEC2FRACTAL_DATA_DIR=/data \
    SPEC2FRACTAL_PUBLIC_URL=http://localhost:8000
VOLUME ["/models"]
USER spec2fractal
WORKDIR /home/spec2fractal

EXPOSE 8000
CMD ["spec2fractal", "serve", "--host", "0.0.0.0", "--port", "8000"]
