#!/usr/bin/env bash
# Runs every fuzz target of p2pmix-bootstrap for SECONDS each (default 60); see mix/fuzz/run.sh.
# Usage: bootstrap/fuzz/run.sh [SECONDS] [TARGET...]
here="$(cd "$(dirname "$0")" && pwd)"
FUZZ_DIR="$here" exec "$here/../../mix/fuzz/run.sh" "$@"
