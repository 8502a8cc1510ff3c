#!/usr/bin/env bash
# Builds the images that compose.yaml and prefect.yaml's docker deployments run, on the engine DOCKER_HOST points at,
# from nothing but the package registries (PyPI and the Debian mirror apt uses): for hosts that cannot pull from
# Docker Hub. Where the official images can be pulled, plain `docker compose build` is all you need.
#   base                            VISIONOPS_BASE_IMAGE (python:3.11.14-slim-bookworm) if the engine has it or can
#                                   pull it; otherwise Debian bookworm (minbase + python3, venv, ca-certificates) made
#                                   with debootstrap and imported as visionops-base:bookworm-python3.11 (root needed)
#   $VISIONOPS_IMAGE:cpu            ./Dockerfile, EXTRA=cpu (default VISIONOPS_IMAGE=visionops); --gpu adds :gpu
#   visionops-postgres:15-bookworm  PostgreSQL 15 from Debian's package (docker/postgres.Dockerfile)
#   visionops-s3:moto-5.2.5         moto's S3 server, the stand-in for MinIO (docker/s3-moto.Dockerfile)
# Usage: docker/build-images.sh [--gpu] [--no-stand-ins]
# Settings (environment): DOCKER (the client; Debian's /usr/bin/docker when present), DOCKER_HOST, VISIONOPS_IMAGE,
#   VISIONOPS_BASE_IMAGE, VISIONOPS_CACHE (/var/cache/visionops: the debootstrap tarball, so a fresh engine imports
#   it in seconds), VISIONOPS_DEBIAN_MIRROR (default: apt's), VISIONOPS_BUILD_CA (a CA bundle for a TLS-intercepting
#   proxy; default $SSL_CERT_FILE; copied to docker/certs/, used by the build stages only).
set -euo pipefail
cd "$(dirname "$0")/.."

GPU=0 STAND_INS=1
for arg in "$@"; do
  case "$arg" in
    --gpu) GPU=1 ;;
    --no-stand-ins) STAND_INS=0 ;;
    *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2 && exit 2 ;;
  esac
done

# Debian's client (20.10) ships the classic builder; another `docker` may come first on PATH: Debian's, by path.
if [ -z "${DOCKER:-}" ]; then
  DOCKER=docker
  [ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker
fi
# The classic builder on purpose: prefect.yaml's build step (prefect-docker, through docker-py) uses it too, so the
# image it builds for a docker deployment comes from this script's layer cache instead of a second `uv sync`.
export DOCKER_BUILDKIT=0
IMAGE=${VISIONOPS_IMAGE:-visionops}
BASE=${VISIONOPS_BASE_IMAGE:-python:3.11.14-slim-bookworm}
CACHE=${VISIONOPS_CACHE:-/var/cache/visionops}
OWN_BASE=visionops-base:bookworm-python3.11
POSTGRES=visionops-postgres:15-bookworm
MOTO_VERSION=5.2.5 # the moto of uv.lock (dev group)
S3=visionops-s3:moto-$MOTO_VERSION

say() { echo "==> $*" >&2; }
has_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }
size_of() { "$DOCKER" image inspect --format '{{.Size}}' "$1" | awk '{printf "%.2f GB", $1 / 1e9}'; }

debian_mirror() { # the mirror apt uses for bookworm/main, as `apt-cache policy` lists it
  [ -n "${VISIONOPS_DEBIAN_MIRROR:-}" ] && echo "$VISIONOPS_DEBIAN_MIRROR" && return
  apt-cache policy | awk '$3 == "bookworm/main" && $2 ~ /^https?:/ {print $2; exit}'
}

own_base() { # debootstrap once into the cache (a tarball), then `docker import` it
  local tarball="$CACHE/base/bookworm-minbase-python3.11.tar" rootfs mirror
  if [ ! -s "$tarball" ]; then
    [ "$(id -u)" = 0 ] || { echo "error: debootstrap needs root (or set VISIONOPS_BASE_IMAGE to a local image)" >&2 && exit 1; }
    command -v debootstrap >/dev/null || { echo "error: apt-get install debootstrap" >&2 && exit 1; }
    mirror=$(debian_mirror)
    [ -n "$mirror" ] || { echo "error: no bookworm mirror in apt's sources; set VISIONOPS_DEBIAN_MIRROR" >&2 && exit 1; }
    mkdir -p "$CACHE/base"
    rootfs=$(mktemp -d "$CACHE/base/rootfs.XXXXXX")
    chmod 755 "$rootfs" # it becomes the image's /, which every user must be able to enter (mktemp makes it 0700)
    trap 'rm -rf "$rootfs"' EXIT
    say "debootstrap bookworm from $mirror (minbase + python3, python3-venv, ca-certificates)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror" \
      >"$CACHE/base/debootstrap.log" 2>&1 || { tail -20 "$CACHE/base/debootstrap.log" >&2 && exit 1; }
    # apt inside the images uses the host's sources (the same mirror, plus bookworm-updates and -security).
    if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
      rm -f "$rootfs/etc/apt/sources.list"
      cp /etc/apt/sources.list.d/*.sources "$rootfs/etc/apt/sources.list.d/"
    fi
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs/etc/resolv.conf" "$rootfs/etc/hostname"
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs" && trap - EXIT
  fi
  say "importing $tarball as $OWN_BASE"
  "$DOCKER" import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' "$tarball" "$OWN_BASE" >/dev/null
}

base_image() { # prints the base image to build on: the configured one if present or pullable, else our own
  if has_image "$BASE" || timeout 120 "$DOCKER" pull -q "$BASE" >/dev/null 2>&1; then
    echo "$BASE"
    return
  fi
  say "$BASE cannot be pulled: building the base image from the Debian mirror instead"
  has_image "$OWN_BASE" || own_base
  echo "$OWN_BASE"
}

sync_ca() { # the proxy's CA bundle into docker/certs/ (unchanged content keeps the build cache)
  local ca=${VISIONOPS_BUILD_CA-${SSL_CERT_FILE:-}}
  [ -n "$ca" ] && [ -f "$ca" ] || return 0
  cmp -s "$ca" docker/certs/build-ca.crt || install -m 644 "$ca" docker/certs/build-ca.crt
}

docker_build() { # docker_build ARGS...: quiet unless it fails, then the end of its log
  local log
  log=$(mktemp)
  if ! "$DOCKER" build --build-arg "BASE_IMAGE=$base" "$@" >"$log" 2>&1; then
    tail -40 "$log" >&2 && rm -f "$log" && exit 1
  fi
  rm -f "$log"
}

# build TAG DOCKERFILE CONTEXT [ARGS...]: one image, timed, with its size. Each named stage (`FROM ... AS STAGE`) is
# tagged NAME-STAGE:TAG too (e.g. visionops-env:cpu), so that pruning stale builds below never drops the layer cache.
build() {
  local tag=$1 file=$2 context=$3 start=$SECONDS stage stages
  shift 3
  say "building $tag"
  mapfile -t stages < <(awk 'toupper($1) == "FROM" && toupper($3) == "AS" {print $4}' "$file")
  for stage in "${stages[@]}"; do
    docker_build --target "$stage" -t "${tag%%:*}-$stage:${tag#*:}" -f "$file" "$@" "$context"
  done
  docker_build -t "$tag" -f "$file" "$@" "$context"
  say "$tag: $(size_of "$tag"), built in $((SECONDS - start)) s"
}

start=$SECONDS
base=$(base_image)
say "base image $base ($((SECONDS - start)) s)"
sync_ca
build "$IMAGE:cpu" Dockerfile . --build-arg EXTRA=cpu
if [ "$GPU" = 1 ]; then build "$IMAGE:gpu" Dockerfile . --build-arg EXTRA=gpu; fi
if [ "$STAND_INS" = 1 ]; then
  build "$POSTGRES" docker/postgres.Dockerfile docker
  build "$S3" docker/s3-moto.Dockerfile docker --build-arg "MOTO_VERSION=$MOTO_VERSION"
fi
# Earlier builds of these images, now untagged (a changed uv.lock leaves ~6 GB behind): only ours, by label.
"$DOCKER" image prune -f --filter label=org.visionops.image >/dev/null
say "done in $((SECONDS - start)) s"
