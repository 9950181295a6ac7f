#!/usr/bin/env bash
# Builds the release binary that docker/Dockerfile ships, into DIR (default
# target/docker). The Dockerfile runs this script and so does .ci/run, so the
# binary CI builds is built exactly as the image's is.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/docker}
CARGO_PROFILE_RELEASE_DEBUG=false cargo build --release --locked --bin kuma-cluster
mkdir -p "$out"
cp target/release/kuma-cluster "$out/kuma-cluster"
