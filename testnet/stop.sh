#!/usr/bin/env bash
# Stops a test network: every process listed in DIR/pids (SIGTERM, then SIGKILL for those still
# running after 5 seconds; a listed id is signalled only while it still runs a p2pmix program),
# and the network namespaces and bridge of a --netns run. It is `p2pmix testnet down`, run with
# the binary the network was started with (DIR/testnet.json says which).
#   testnet/stop.sh target/testnet/run-…
set -uo pipefail
DIR=${1:?usage: testnet/stop.sh RUN_DIR}
[ -f "$DIR/testnet.json" ] || { echo "no $DIR/testnet.json: not a test network's run directory" >&2; exit 2; }
BIN=$(sed -n 's/^ *"bin": *"\(.*\)",\{0,1\}$/\1/p' "$DIR/testnet.json" | head -n1)
[ -x "$BIN" ] || { echo "the network's binary $BIN is gone: run p2pmix testnet down --dir $DIR with another build" >&2; exit 2; }
exec "$BIN" testnet down --dir "$DIR"
