# PostgreSQL 15 from Debian's package: the stand-in for compose.yaml's `postgres` service where the official image
# (postgres:15.14-bookworm) cannot be pulled. Built by docker/build-images.sh (context: docker/) as
# visionops-postgres:15-bookworm; behaves like the official image for what compose.yaml uses: POSTGRES_USER and
# POSTGRES_PASSWORD, /docker-entrypoint-initdb.d/*.sh on the first start of an empty volume, data in
# /var/lib/postgresql/data, pg_isready for the healthcheck, SIGINT (fast shutdown) to stop.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm
FROM ${BASE_IMAGE}
LABEL org.visionops.image=postgres

# No cluster of Debian's own (/var/lib/postgresql/15/main): the entrypoint makes one in the volume.
RUN mkdir -p /etc/postgresql-common \
    && echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf \
    && apt-get update && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data \
    && install -d -o postgres -g postgres -m 2775 /var/run/postgresql \
    && install -d /docker-entrypoint-initdb.d
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data LANG=C.UTF-8
USER postgres
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["sh", "/usr/local/bin/postgres-entrypoint.sh"]
