#!/usr/bin/env bash
# Installs everything Switchyard needs to build and test, and fetches the pinned llama.cpp source.
# Idempotent: a second run only checks. Usage: scripts/setup.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="$root/.deps"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/switchyard"

# node-llama-cpp@3.22.1 ships the llama.cpp source it was built from as a git bundle.
readonly kLlamaPackage="node-llama-cpp@3.22.1"
readonly kLlamaIntegrity="sha512-bltIipuWmc123H7tMIgDGKSsSrhmhlQYeVUC48XTjVW7XGJJiJJyCdlTMzQ/LiWoPkGDpcL4FviDpgw7qfTiDw=="
readonly kLlamaCommit="de3ff815ea7d559ee917f063901b8986f038abc6"

packages=(
  build-essential cmake ninja-build ccache pkg-config git ca-certificates curl
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libboost-dev libboost-system-dev libcurl4-openssl-dev libyaml-cpp-dev nlohmann-json3-dev
  libhyperscan-dev libre2-dev libsqlite3-dev libsimdjson-dev libgoogle-perftools-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  prometheus wrk
)

log() { printf 'setup: %s\n' "$*" >&2; }

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v npm >/dev/null; then
  log "installing nodejs and npm"
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends nodejs npm
fi

# llama.cpp: npm tarball -> integrity check -> git bundle -> pinned commit.
llama_dir="$deps/llama.cpp"
if [[ "$(git -C "$llama_dir" rev-parse HEAD 2>/dev/null || true)" != "$kLlamaCommit" ]]; then
  mkdir -p "$cache" "$deps"
  tarball="$cache/node-llama-cpp-3.22.1.tgz"
  if [[ ! -f "$tarball" ]]; then
    log "fetching $kLlamaPackage from the npm registry"
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent "$kLlamaPackage" >/dev/null 2>&1)
    mv "$tmp"/node-llama-cpp-3.22.1.tgz "$tarball.part"
    rmdir "$tmp"
    mv "$tarball.part" "$tarball"
  fi
  actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
  if [[ "$actual" != "$kLlamaIntegrity" ]]; then
    rm -f "$tarball"
    log "integrity mismatch for $kLlamaPackage: expected $kLlamaIntegrity, got $actual"
    exit 1
  fi
  work="$(mktemp -d)"
  tar -xzf "$tarball" -C "$work" package/llama/gitRelease.bundle
  rm -rf "$llama_dir.tmp"
  git clone -q --no-checkout "$work/package/llama/gitRelease.bundle" "$llama_dir.tmp"
  git -C "$llama_dir.tmp" -c advice.detachedHead=false checkout -q "$kLlamaCommit"
  rm -rf "$work" "$llama_dir"
  mv "$llama_dir.tmp" "$llama_dir"
  log "llama.cpp $kLlamaCommit ready in $llama_dir"
fi

# The official SDKs drive the gateway in the client-compatibility tests.
if [[ -f "$root/tests/sdk/package.json" && ! -d "$root/tests/sdk/node_modules" ]]; then
  log "installing the SDK test clients"
  (cd "$root/tests/sdk" && npm ci --silent --no-audit --no-fund)
fi
log "ok"
