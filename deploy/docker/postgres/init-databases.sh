#!/bin/bash
# Runs once, on an empty data volume (docker-entrypoint-initdb.d): one database per entry of
# POSTGRES_EXTRA_DATABASES (Airflow's metadata, MLflow's tracking store), owned by POSTGRES_USER.
set -euo pipefail
for db in ${POSTGRES_EXTRA_DATABASES:-}; do
    echo "init-databases: creating database $db"
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
        -c "CREATE DATABASE \"$db\" OWNER \"$POSTGRES_USER\""
done
