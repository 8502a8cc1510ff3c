#!/bin/sh
# One-shot job of compose.yaml's `buckets` service (minio/mc image): the MLflow and DVC buckets and the S3 user that
# MLflow, the workers and laptops use, limited to those two buckets (MinIO's root account stays with the admin).
# Safe to rerun: existing buckets are kept, the user's secret key is set to the one in .env.
set -eu
mc alias set visionops http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "visionops/$VISIONOPS_MLFLOW_BUCKET" "visionops/$VISIONOPS_DVC_BUCKET"
policy=/tmp/visionops-rw.json
cat >"$policy" <<JSON
{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": [
  "arn:aws:s3:::$VISIONOPS_MLFLOW_BUCKET", "arn:aws:s3:::$VISIONOPS_MLFLOW_BUCKET/*",
  "arn:aws:s3:::$VISIONOPS_DVC_BUCKET", "arn:aws:s3:::$VISIONOPS_DVC_BUCKET/*"]}]}
JSON
mc admin policy create visionops visionops-rw "$policy"
mc admin user add visionops "$VISIONOPS_S3_ACCESS_KEY" "$VISIONOPS_S3_SECRET_KEY"
# Attaching a policy the user already has is an error in mc: attach only on the first run.
if ! mc admin user info visionops "$VISIONOPS_S3_ACCESS_KEY" | grep -q visionops-rw; then
  mc admin policy attach visionops visionops-rw --user "$VISIONOPS_S3_ACCESS_KEY"
fi
echo "buckets $VISIONOPS_MLFLOW_BUCKET and $VISIONOPS_DVC_BUCKET ready for $VISIONOPS_S3_ACCESS_KEY"
