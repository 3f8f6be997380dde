# syntax=docker/dockerfile:1
# Airflow 3.3.2 with the opsassist library, the DAGs and the Spark jobs (LocalExecutor in
# docker-compose.yaml; KubernetesExecutor with deploy/k8s/airflow/values.yaml).
# Build from the repository root:
#   docker build -f deploy/docker/airflow.Dockerfile -t opsassist-airflow:0.1.0-airflow3.3.2 .
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}
# torch from this wheel index (empty: the lock's PyPI torch with the CUDA wheels)
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

USER root
# git: runbooks from a Git URL (OPSASSIST_RUNBOOKS_GIT_URL); a JRE: the Spark jobs (local[*]).
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /opt/opsassist/var/data /opt/airflow/auth \
    && chown -R airflow:0 /opt/opsassist /opt/airflow/auth
COPY deploy/docker/install-locked.sh /usr/local/bin/install-locked.sh

USER airflow
# The project's lock pins apache-airflow==3.3.2 too, so this keeps the image's Airflow as it is.
COPY --chown=airflow:0 requirements.lock /opt/opsassist/requirements.lock
RUN install-locked.sh python /opt/opsassist/requirements.lock
COPY --chown=airflow:0 . /opt/opsassist
# Editable: the library finds expectations/ and the shipped corpora beside it, as in a checkout.
RUN python -m pip install --no-cache-dir --no-deps -e /opt/opsassist

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/opsassist/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/opsassist/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    OPSASSIST_DATA_DIR=/opt/opsassist/var/data \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
WORKDIR /opt/airflow
