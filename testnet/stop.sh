#!/usr/bin/env bash
# Stops a test network: every process listed in DIR/pids (SIGTERM, then SIGKILL for those still
# running after 5 seconds; a listed process is signalled only while the same process runs, known
# by its id and start time), and the network namespaces and bridge of a --netns run. It is
# `p2pmix testnet down`, run with the binary the network was started with (DIR/testnet.json
# says which), or else the repository's newest build, or `p2pmix` on the PATH.
#   testnet/stop.sh target/testnet/run-…
set -uo pipefail
DIR=${1:?usage: testnet/stop.sh RUN_DIR}
[ -f "$DIR/pids" ] || [ -f "$DIR/testnet.json" ] || { echo "no $DIR/pids: not a test network's run directory" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
for BIN in "$(sed -n 's/^ *"bin": *"\(.*\)",\{0,1\}$/\1/p' "$DIR/testnet.json" 2>/dev/null | head -n1)" \
    "$TARGET/release/p2pmix" "$TARGET/debug/p2pmix" "$(command -v p2pmix)"; do
    [ -n "$BIN" ] && [ -x "$BIN" ] && exec "$BIN" testnet down --dir "$DIR"
done
echo "no p2pmix binary to stop $DIR with: build one (cargo build -p p2pmix) and run this again" >&2
exit 2
