# syntax=docker/dockerfile:1
# MLflow tracking server with the PostgreSQL driver (the upstream image has none), at the
# versions of the project's lock. Build from the repository root:
#   docker build -f deploy/docker/mlflow.Dockerfile -t opsassist-mlflow:3.17.2 .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
FROM ${PYTHON_IMAGE}

COPY requirements.lock /tmp/requirements.lock
RUN grep -E '^(mlflow|mlflow-skinny|mlflow-tracing|psycopg|psycopg-binary)==' /tmp/requirements.lock \
        > /tmp/mlflow.txt \
    && pip install --no-cache-dir --disable-pip-version-check -r /tmp/mlflow.txt \
    && rm /tmp/requirements.lock /tmp/mlflow.txt \
    && useradd --uid 10001 --gid 0 --no-create-home mlflow \
    && mkdir -p /mlflow/artifacts \
    && chown -R 10001:0 /mlflow
USER 10001
EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
