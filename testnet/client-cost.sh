#!/usr/bin/env bash
# What a client costs at the network's default rates: CPU share and memory of one
# `p2pmix client listen` (a client with no messages to send still sends its Poisson stream of
# drop cover plus loop and drop cover: about 60 Sphinx packets a second at the default rates,
# and fetches what comes back), measured over SECONDS after it has a consensus: CPU, memory,
# and the bytes each way on its TCP connection to its gateway (`ss -tinp`, link encryption and
# framing included).
#   ./testnet/run.sh --keep --messages 1          # prints RUN_DIR
#   ./testnet/client-cost.sh RUN_DIR [SECONDS]
set -euo pipefail
DIR=${1:?usage: testnet/client-cost.sh RUN_DIR [SECONDS]}
SECONDS_TO_RUN=${2:-60}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${P2PMIX_BIN:-$ROOT/target/release/p2pmix}
[ -f "$DIR/authorities.toml" ] || { echo "$DIR is not a testnet run directory" >&2; exit 2; }
CLIENT="$DIR/cost-client"
mkdir -p "$CLIENT"
GW=$(head -n1 "$DIR/gw0/data/listen-addrs")
"$BIN" client listen --json --data-dir "$CLIENT" --gateway "$GW" --authorities "$DIR/authorities.toml" \
    > "$CLIENT/events.jsonl" 2> "$CLIENT/log" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do grep -q '"ready"' "$CLIENT/events.jsonl" 2>/dev/null && break; sleep 0.1; done
grep -q '"ready"' "$CLIENT/events.jsonl" || { echo "the client got no consensus" >&2; exit 1; }
TICKS=$(getconf CLK_TCK)
cpu() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }
GW_PORT=$(sed -n 's#.*/tcp/\([0-9]*\).*#\1#p' <<< "$GW")
# "received sent" bytes of the client's connections to its gateway (0 0 if ss shows none).
link_bytes() {
    ss -tinpH 2>/dev/null | awk -v p="pid=$PID," -v peer="127.0.0.1:$GW_PORT" '
        /^[^ \t]/ { keep = index($0, p) > 0 && $5 == peer; next }
        keep { for (i = 1; i <= NF; i++) {
                   if ($i ~ /^bytes_received:/) r += substr($i, 16)
                   if ($i ~ /^bytes_sent:/) s += substr($i, 12) }
               keep = 0 }
        END { print r + 0, s + 0 }'
}
START_CPU=$(cpu); START=$(date +%s%N); read -r START_IN START_OUT < <(link_bytes)
sleep "$SECONDS_TO_RUN"
END_CPU=$(cpu); END=$(date +%s%N); read -r END_IN END_OUT < <(link_bytes)
RSS=$(awk '/^VmRSS/ { print $2 }' "/proc/$PID/status")
HWM=$(awk '/^VmHWM/ { print $2 }' "/proc/$PID/status")
awk -v in_b=$((END_IN - START_IN)) -v out_b=$((END_OUT - START_OUT)) -v c=$((END_CPU - START_CPU)) -v t="$TICKS" -v ns=$((END - START)) -v rss="$RSS" -v hwm="$HWM" -v s="$SECONDS_TO_RUN" 'BEGIN {
    printf "client at default rates over %d s: CPU %.1f%% of one core, RSS %.1f MiB (peak %.1f MiB)\n",
        s, 100 * (c / t) / (ns / 1e9), rss / 1024, hwm / 1024
    printf "link to its gateway: inbound %.1f KiB/s, outbound %.1f KiB/s\n",
        in_b / 1024 / (ns / 1e9), out_b / 1024 / (ns / 1e9) }'
