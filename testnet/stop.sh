#!/usr/bin/env bash
# Stops every process testnet/run.sh started in DIR (listed in DIR/pids): SIGTERM, then SIGKILL
# for those still running after 5 seconds. A listed process id is signalled only while it still
# runs a p2pmix program (ids of processes that ended long ago may belong to others by now).
#   testnet/stop.sh target/testnet/run-…
set -uo pipefail
DIR=${1:?usage: testnet/stop.sh RUN_DIR}
[ -f "$DIR/pids" ] || { echo "no $DIR/pids: not a testnet run directory" >&2; exit 2; }
ours() { tr '\0' ' ' 2>/dev/null < "/proc/$1/cmdline" | grep -q "p2pmix"; }
PIDS=""
for pid in $(awk '{ print $1 }' "$DIR/pids"); do ours "$pid" && PIDS="$PIDS $pid"; done
for pid in $PIDS; do kill "$pid" 2>/dev/null; done
for _ in $(seq 1 50); do
    alive=0
    for pid in $PIDS; do ours "$pid" && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
done
for pid in $PIDS; do ours "$pid" && kill -9 "$pid" 2>/dev/null; done
echo "stopped $(echo $PIDS | wc -w) processes of $DIR"
# --netns: the namespaces (their veth links go with them) and the bridge the run made.
if [ -f "$DIR/netns" ]; then
    while read -r ns; do ip netns del "$ns" 2>/dev/null; done < "$DIR/netns"
    echo "removed $(wc -l < "$DIR/netns") network namespaces"
    rm -f "$DIR/netns"
fi
if [ -f "$DIR/netns-bridge" ]; then
    ip link del "$(cat "$DIR/netns-bridge")" 2>/dev/null
    rm -f "$DIR/netns-bridge"
fi
