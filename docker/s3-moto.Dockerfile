# moto's S3 server (docker/s3-moto.py): the stand-in for compose.yaml's `minio` service where MinIO's images cannot
# be pulled (docker/compose.local.yaml swaps it in under the same service name, port and settings). Built by
# docker/build-images.sh (context: docker/) as visionops-s3:moto-<MOTO_VERSION>.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

FROM ${BASE_IMAGE} AS env
LABEL org.visionops.image=env
# Extra CA certificates for a TLS-intercepting proxy (see certs/README.md): this stage only.
COPY certs/ /usr/local/share/ca-certificates/visionops/
RUN update-ca-certificates >/dev/null
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
# The moto of uv.lock's dev group (tests/helpers.py runs the same server as a process), with only what its S3 server
# needs: moto[s3] and the Flask of moto[server] (moto[server] brings every AWS service's dependencies, twice the size).
# Versions: uv.lock's.
ARG MOTO_VERSION=5.2.5
RUN python3 -m venv /opt/moto \
    && /opt/moto/bin/pip install --no-cache-dir --quiet "moto[s3]==${MOTO_VERSION}" flask==3.1.3 flask-cors==6.0.5

FROM ${BASE_IMAGE}
LABEL org.visionops.image=s3-moto
COPY --from=env /opt/moto /opt/moto
COPY s3-moto.py /opt/moto/s3-moto.py
RUN groupadd --gid 10001 s3 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin s3 \
    && install -d -o 10001 -g 10001 /data
USER 10001:10001
VOLUME /data
EXPOSE 9000
ENTRYPOINT ["/opt/moto/bin/python", "/opt/moto/s3-moto.py"]
CMD ["serve"]
