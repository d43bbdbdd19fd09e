# syntax=docker/dockerfile:1
# One image for the API (`harden serve`, the default command) and the GPU workers
# (`harden worker`). TORCH_VARIANT picks the torch wheel index:
#   docker build -t harden:cpu .                                    # CPU-only torch
#   docker build -t harden:cu130 --build-arg TORCH_VARIANT=cu130 .  # CUDA torch, GPU workers
# TORCH_VARIANT is the name of a folder of https://download.pytorch.org/whl/ (cpu, cu126,
# cu128, cu130, ...): pick one that publishes torch 2.14.1 and that the hosts' NVIDIA driver
# supports. The CUDA wheels carry their own CUDA runtime libraries, so the same slim Python
# base serves both; the host only needs the NVIDIA driver and container toolkit.

ARG PYTHON_VERSION=3.11

# ---- builder: compile nothing into the final image, only a finished virtualenv ----------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder

ARG TORCH_VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src

# torch first, from the variant's own index, pinned as in constraints.txt: this layer is the
# big one (about 200 MB CPU, several GB CUDA) and changes only with the pins.
COPY constraints.txt ./
RUN pip install --no-cache-dir \
        --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
        torch==2.14.1 torchvision==0.29.1

# Then the service and its other dependencies from PyPI. The installed torch (2.14.1+cpu,
# +cu130, ...) satisfies the ==2.14.1 pin, so pip keeps it instead of fetching the default build.
# The s3 extra brings boto3, the S3 artifact store's client (HARDEN_ARTIFACT_STORE=s3); the
# mlflow extra the MLflow client of the hand-off (HARDEN_MLFLOW_TRACKING_URI, a job's mlflow).
COPY pyproject.toml README.md ./
COPY core ./core
COPY app ./app
COPY worker ./worker
COPY cli ./cli
COPY client ./client
RUN pip install --no-cache-dir -c constraints.txt ./client ".[s3,mlflow]"

# ---- final: the virtualenv on a clean slim base, run as an unprivileged user -----------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS final

ARG TORCH_VARIANT=cpu
LABEL org.opencontainers.image.title="harden" \
      org.opencontainers.image.description="Model-hardening service (defensive distillation)" \
      harden.torch-variant="${TORCH_VARIANT}"

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HARDEN_ARTIFACT_DIR=/var/lib/harden/artifacts \
    HARDEN_UPLOAD_DIR=/var/lib/harden/uploads \
    HARDEN_WORK_DIR=/var/lib/harden/work \
    HARDEN_DATABASE_URL=sqlite:////var/lib/harden/harden.db \
    HARDEN_BROKER_URL=sqla+sqlite:////var/lib/harden/broker.db

# A fixed numeric uid so mounted volumes can be chowned to it on the host.
RUN groupadd --system --gid 10001 harden \
    && useradd --system --uid 10001 --gid harden --home-dir /var/lib/harden \
        --shell /usr/sbin/nologin harden \
    && mkdir -p /var/lib/harden \
    && chown harden:harden /var/lib/harden

COPY --from=builder /opt/venv /opt/venv

WORKDIR /var/lib/harden
USER 10001:10001
VOLUME ["/var/lib/harden"]
EXPOSE 8000

# Checks the API; the worker service overrides it with a Celery ping (docker-compose.yml).
# Python instead of curl: the slim base has no curl and installing it only for this adds size.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

# The API drains for up to 30 s on SIGTERM (uvicorn's graceful shutdown); compose gives the
# containers a longer stop_grace_period than that.
ENTRYPOINT ["harden"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
