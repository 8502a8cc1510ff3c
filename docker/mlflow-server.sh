#!/bin/sh
# Entry point of compose.yaml's `mlflow` service: runs the `mlflow server ...` command it is given, adding MLflow's
# basic-auth app when MLFLOW_BASIC_AUTH=true. The auth tables go into the backend store's database (they keep their
# own migration table there), so the auth config is written here from the environment: no password in a file.
set -eu
case "${MLFLOW_BASIC_AUTH:-false}" in
  false) exec "$@" ;;
  true) ;;
  *) echo "MLFLOW_BASIC_AUTH in .env must be true or false, not '${MLFLOW_BASIC_AUTH}'" >&2; exit 2 ;;
esac
# MLflow creates the admin from MLFLOW_AUTH_ADMIN_PASSWORD on the first start only; later, change it in the UI or API.
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?MLFLOW_BASIC_AUTH=true needs MLFLOW_AUTH_ADMIN_PASSWORD in .env}"
: "${MLFLOW_BACKEND_STORE_URI:?compose.yaml must set MLFLOW_BACKEND_STORE_URI for the mlflow service}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?MLFLOW_BASIC_AUTH=true needs MLFLOW_FLASK_SERVER_SECRET_KEY in .env (CSRF key)}"
# The auth app needs Flask-WTF (the mlflow[auth] extra): say so instead of an ImportError deep in a worker.
if ! python -c "import flask_wtf" 2>/dev/null; then
  echo "MLFLOW_BASIC_AUTH=true needs Flask-WTF (the mlflow[auth] extra, locked in uv.lock): this image" \
    "was built without it; rebuild with \`docker compose build\`" >&2
  exit 2
fi
export MLFLOW_AUTH_CONFIG_PATH="${TMPDIR:-/tmp}/mlflow-basic-auth.ini"
umask 077
cat >"$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${MLFLOW_BACKEND_STORE_URI}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
exec "$@" --app-name basic-auth
