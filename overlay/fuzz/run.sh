#!/usr/bin/env bash
# Runs every fuzz target of p2pmix (the overlay crate: client frames, addresses, end-to-end
# decryption, the mailbox protocol) for SECONDS each (default 60); see mix/fuzz/run.sh.
# Usage: overlay/fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
FUZZ_DIR="$(cd "$(dirname "$0")" && pwd)" exec "$(dirname "$0")/../../mix/fuzz/run.sh" "$@"
