#!/bin/sh
# Run once by the postgres image on the first start of an empty data volume (/docker-entrypoint-initdb.d/):
# one login role and one database per server, so MLflow and Prefect cannot read or change each other's tables.
# Passwords come from .env (see .env.example); a role's password is changed later with ALTER ROLE, not here.
set -eu
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD in .env (see .env.example)}"
: "${PREFECT_DB_PASSWORD:?set PREFECT_DB_PASSWORD in .env (see .env.example)}"
# psql quotes the :'variables' itself, so a password cannot break out of the SQL string.
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  -v mlflow_password="$MLFLOW_DB_PASSWORD" -v prefect_password="$PREFECT_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
CREATE ROLE prefect LOGIN PASSWORD :'prefect_password';
CREATE DATABASE prefect OWNER prefect;
REVOKE ALL ON DATABASE prefect FROM PUBLIC;
SQL
