#!/usr/bin/env bash
# Starts a whole p2pmix network on 127.0.0.1 (or, with --netns, every process in a network
# namespace of its own) (3 authorities, gateways, mixes in 3 layers and two
# clients, each a separate process on a free port), sends messages from one client to the other,
# and reports what arrived: a human summary, then, as the last line, one JSON object.
#
#   ./testnet/run.sh                       # 100 messages through 2 gateways and 6 mixes
#   ./testnet/run.sh --kill-mixes 2        # two mixes die while messages are in flight
#   ./testnet/run.sh --kill-authority 1    # one authority stops; the next consensus still comes
#   ./testnet/run.sh --kill9 --kill-mixes 1 --restart-gateways 1 --restart-clients
#                                          # SIGKILL for every drill; a gateway and both clients
#                                          # killed and started again on their data dirs
#   ./testnet/run.sh --blackhole-mix 1     # a mix drops everything; the consensus leaves it out
#   ./testnet/run.sh --keep                # leave it running; stop it with testnet/stop.sh DIR
#   ./testnet/run.sh --clients 20          # 20 clients send to each other; anonymity measured
#   ./testnet/run.sh --clients 20 --cover off   # the same without any cover traffic
#
# Exit status: 0 when every message arrived exactly once (and the drills passed), 1 otherwise,
# 2 when the network did not come up. The run directory (printed) holds every node's log and
# metrics snapshot, the clients' event logs and report.png (measured latency against theory;
# with --clients, also entropy, the adversary's success and epsilon per message).
set -euo pipefail
# Only the drill's black holes misbehave: a plan left in the caller's environment must not reach
# every node (binaries built with the feature chaos read it).
unset P2PMIX_CHAOS

usage() {
    cat <<'EOF'
usage: testnet/run.sh [options]
  --gateways N          gateways (default 2)
  --mixes N             mixes, spread over 3 layers (default 6)
  --epoch-ms MS         epoch length (default 10000)
  --mean-delay-ms MS    mean per-hop mix delay (default 50)
  --messages N          messages to send (default 100)
  --interval-ms MS      pause between messages (default 50)
  --size BYTES          message size (default: a short text)
  --kill-mixes N        kill N mixes (at most one per layer) while messages are in flight
  --kill-authority N    stop N authorities (at most 1) and wait for the next consensus
  --kill9               every drill kills with SIGKILL (default SIGTERM: a clean stop)
  --restart-gateways N  kill N gateways (bob's first) once a third of the messages left, and
                        start them again on their data dirs and addresses a second later
  --restart-clients     kill alice and bob once a third of the messages left and start them
                        again on their data dirs: alice resumes her outbox and sends the rest;
                        every message must still arrive exactly once (not with --clients)
  --blackhole-mix N     N mixes (at most one per layer; at most 3) drop everything they carry
                        from just after the first messages leave; health measurement is on, and
                        the run waits until the consensus leaves them out (and fails if it does
                        not, or if it leaves out an honest node). The binaries are built with
                        the test-only cargo feature `chaos` for it (release builds never have
                        it; with --bin-dir, give binaries built with --features p2pmix/chaos);
                        not with --kill-mixes
  --clients N           N clients (at least 2) instead of alice and bob, each sending --messages
                        messages (default 20) to random others, one every --interval-ms on average
                        (default 500, Poisson); every node and client records link traces and
                        ground truth, and the report measures anonymity
  --cover MODE          on (default: the consensus defaults), stream (client loop and drop cover
                        and node loops off; the send stream still sends drop cover when idle) or
                        off (no cover at all: clients send real packets only, as they come)
  --send-interval-ms MS, --loop-interval-ms MS, --drop-interval-ms MS, --mix-loop-interval-ms MS
                        override one stream's mean interval (0: that stream off)
  --dir DIR             run directory (default target/testnet/run-TIMESTAMP)
  --debug               use target/debug (what cargo test builds; faster to build, slower to run)
  --bin-dir DIR         use the p2pmix, p2pmix-testnet-report and p2pmix-anonymity binaries in
                        DIR instead of building (several runs of one build)
  --netns               every authority, node and client in a network namespace of its own, with
                        an address of its own in a /16 of its own (100.64.0.0/10, shared address
                        space: routed nowhere; nodes' routes then obey the one-/16-per-route rule),
                        all on one bridge this run makes; needs root. Everything it made is
                        removed when the run ends (or by testnet/stop.sh DIR after --keep)
  --netns-crowded       as --netns, but every process in one /16 (100.64.0.0/16): no route can
                        keep its hops in different /16s, so nothing can be delivered (the
                        diversity rule at work); the run passes only if nothing arrives
  --wan DELAY[,LOSS]    with --netns: every host delays what it sends by DELAY (e.g. 30ms) and
                        loses LOSS of it (e.g. 1%), through tc netem on its link. Where the kernel
                        has no netem (sch_netem; these CI machines do not), the run says so and
                        goes on without; the JSON line's drills.wan says which happened
  --keep                leave the network running (stop it with testnet/stop.sh DIR)
  --timeout S           longest wait for the messages (default 180)
EOF
}

GATEWAYS=2 MIXES=6 EPOCH_MS=10000 MEAN_DELAY_MS=50 MESSAGES="" INTERVAL_MS="" SIZE=""
KILL_MIXES=0 KILL_AUTHORITY=0 KILL9=0 RESTART_GATEWAYS=0 RESTART_CLIENTS=0 BLACKHOLE_MIX=0 DIR="" PROFILE=release KEEP=0 TIMEOUT=180 CLIENTS=0 COVER=on BIN_DIR=""
SEND_INTERVAL_MS="" LOOP_INTERVAL_MS="" DROP_INTERVAL_MS="" MIX_LOOP_INTERVAL_MS="" NETNS="" WAN="" WAN_DRILL=""
while [ $# -gt 0 ]; do
    case "$1" in
        --gateways) GATEWAYS=$2; shift 2 ;;
        --mixes) MIXES=$2; shift 2 ;;
        --epoch-ms) EPOCH_MS=$2; shift 2 ;;
        --mean-delay-ms) MEAN_DELAY_MS=$2; shift 2 ;;
        --messages) MESSAGES=$2; shift 2 ;;
        --interval-ms) INTERVAL_MS=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --kill-mixes) KILL_MIXES=$2; shift 2 ;;
        --kill-authority) KILL_AUTHORITY=$2; shift 2 ;;
        --kill9) KILL9=1; shift ;;
        --restart-gateways) RESTART_GATEWAYS=$2; shift 2 ;;
        --restart-clients) RESTART_CLIENTS=1; shift ;;
        --blackhole-mix) BLACKHOLE_MIX=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        --cover) COVER=$2; shift 2 ;;
        --send-interval-ms) SEND_INTERVAL_MS=$2; shift 2 ;;
        --loop-interval-ms) LOOP_INTERVAL_MS=$2; shift 2 ;;
        --drop-interval-ms) DROP_INTERVAL_MS=$2; shift 2 ;;
        --mix-loop-interval-ms) MIX_LOOP_INTERVAL_MS=$2; shift 2 ;;
        --dir) DIR=$2; shift 2 ;;
        --debug) PROFILE=debug; shift ;;
        --bin-dir) BIN_DIR=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --netns) NETNS=spread; shift ;;
        --netns-crowded) NETNS=crowded; shift ;;
        --wan) WAN=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done
# Defaults that depend on the mode: alice sends 100 messages 50 ms apart; in --clients mode
# each client sends 20, 500 ms apart on average.
if [ "$CLIENTS" = 0 ]; then : "${MESSAGES:=100}" "${INTERVAL_MS:=50}"; else : "${MESSAGES:=20}" "${INTERVAL_MS:=500}"; fi
# The stream intervals of each cover mode (ms; 0 turns a stream off); explicit options win.
case "$COVER" in
    on) COVER_SEND=20 COVER_LOOP=200 COVER_DROP=200 COVER_MIX=1000 ;;
    stream) COVER_SEND=20 COVER_LOOP=0 COVER_DROP=0 COVER_MIX=0 ;;
    off) COVER_SEND=0 COVER_LOOP=0 COVER_DROP=0 COVER_MIX=0 ;;
    *) echo "--cover: on, stream or off" >&2; exit 2 ;;
esac
: "${SEND_INTERVAL_MS:=$COVER_SEND}" "${LOOP_INTERVAL_MS:=$COVER_LOOP}" "${DROP_INTERVAL_MS:=$COVER_DROP}" "${MIX_LOOP_INTERVAL_MS:=$COVER_MIX}"
for v in GATEWAYS MIXES EPOCH_MS MEAN_DELAY_MS MESSAGES INTERVAL_MS KILL_MIXES KILL_AUTHORITY RESTART_GATEWAYS BLACKHOLE_MIX TIMEOUT CLIENTS \
    SEND_INTERVAL_MS LOOP_INTERVAL_MS DROP_INTERVAL_MS MIX_LOOP_INTERVAL_MS; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]]; then echo "--${v,,}: not a number: ${!v}" >&2; exit 2; fi
done
[ "$CLIENTS" = 0 ] || [ "$CLIENTS" -ge 2 ] || { echo "--clients: at least 2 (they send to each other)" >&2; exit 2; }
if [ -n "$SIZE" ] && ! [[ $SIZE =~ ^[0-9]+$ ]]; then echo "--size: not a number" >&2; exit 2; fi
[ "$EPOCH_MS" -ge 1000 ] || { echo "--epoch-ms: at least 1000" >&2; exit 2; }
[ "$GATEWAYS" -ge 1 ] || { echo "--gateways: at least 1" >&2; exit 2; }
[ "$MIXES" -ge 3 ] || { echo "--mixes: at least 3 (one per layer)" >&2; exit 2; }
[ "$KILL_AUTHORITY" -le 1 ] || { echo "--kill-authority: at most 1 of 3 (2 must sign)" >&2; exit 2; }
[ "$RESTART_GATEWAYS" -le "$GATEWAYS" ] || { echo "--restart-gateways: at most --gateways ($GATEWAYS)" >&2; exit 2; }
[ "$RESTART_CLIENTS" = 0 ] || [ "$CLIENTS" = 0 ] || { echo "--restart-clients: with alice and bob only, not with --clients" >&2; exit 2; }
[ "$KILL_MIXES" -le 3 ] || { echo "--kill-mixes: at most 3 (one per layer)" >&2; exit 2; }
if [ "$KILL_MIXES" -gt 0 ] && [ "$MIXES" -lt $((3 + KILL_MIXES)) ]; then
    echo "--kill-mixes $KILL_MIXES needs at least $((3 + KILL_MIXES)) mixes" >&2; exit 2
fi
[ "$BLACKHOLE_MIX" -le 3 ] || { echo "--blackhole-mix: at most 3 (one per layer)" >&2; exit 2; }
if [ "$BLACKHOLE_MIX" -gt 0 ]; then
    # A killed mix is measured dead and left out too: the drills would blur into each other.
    [ "$KILL_MIXES" = 0 ] || { echo "--blackhole-mix and --kill-mixes do not combine" >&2; exit 2; }
    # The consensus leaves out at most a third of the mixes and keeps a mix in every layer.
    NEED=$(( 3 * BLACKHOLE_MIX > 3 + BLACKHOLE_MIX ? 3 * BLACKHOLE_MIX : 3 + BLACKHOLE_MIX ))
    if [ "$MIXES" -lt "$NEED" ]; then
        echo "--blackhole-mix $BLACKHOLE_MIX needs at least $NEED mixes (the consensus leaves out at most a third of them)" >&2; exit 2
    fi
fi

if [ -n "$NETNS" ]; then
    [ "$(id -u)" = 0 ] || { echo "--netns: needs root (it makes network namespaces, a bridge and veth links): run it with sudo" >&2; exit 2; }
    command -v ip >/dev/null 2>&1 || { echo "--netns: needs iproute2 (ip)" >&2; exit 2; }
    ip netns list >/dev/null 2>&1 || { echo "--netns: this kernel or sandbox offers no network namespaces" >&2; exit 2; }
fi
WAN_DELAY="" WAN_LOSS=""
if [ -n "$WAN" ]; then
    [ -n "$NETNS" ] || { echo "--wan needs --netns (the delay sits on each host's own link)" >&2; exit 2; }
    WAN_DELAY=${WAN%%,*}
    [ "$WAN_DELAY" = "$WAN" ] || WAN_LOSS=${WAN#*,}
    [[ "$WAN_DELAY" =~ ^[0-9]+(\.[0-9]+)?(us|ms|s)$ ]] || { echo "--wan: the delay must look like 30ms (got $WAN_DELAY)" >&2; exit 2; }
    [ -z "$WAN_LOSS" ] || [[ "$WAN_LOSS" =~ ^[0-9]+(\.[0-9]+)?%$ ]] || { echo "--wan: the loss must look like 1% (got $WAN_LOSS)" >&2; exit 2; }
    command -v tc >/dev/null 2>&1 || { echo "--wan: needs tc (iproute2)" >&2; exit 2; }
fi

[ -z "$BIN_DIR" ] || BIN_DIR=$(cd "$BIN_DIR" && pwd) || exit 2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STARTED=$(date +%s)
cd "$ROOT"
BINARIES=(--bin p2pmix --bin p2pmix-testnet-report --bin p2pmix-anonymity)
if [ -n "$BIN_DIR" ]; then
    echo "==> using the binaries in $BIN_DIR"
elif [ "$BLACKHOLE_MIX" -gt 0 ]; then
    # The drill's misbehaving mixes need the test-only feature `chaos` (P2PMIX_CHAOS). The test
    # profile in debug, as `cargo test` builds: only the crates the feature touches are built
    # again. The binaries are linked into the run directory below, so that what stays in the
    # target directory is the next ordinary build's.
    echo "==> building ($PROFILE, with the test-only feature chaos)"
    if [ "$PROFILE" = release ]; then
        cargo build --locked -q --release -p p2pmix -p p2pmix-examples --features p2pmix/chaos "${BINARIES[@]}"
    else
        cargo build --locked -q --profile test -p p2pmix -p p2pmix-examples --features p2pmix/chaos "${BINARIES[@]}"
    fi
elif [ "$PROFILE" = release ]; then
    echo "==> building ($PROFILE)"
    cargo build --locked -q --release -p p2pmix -p p2pmix-examples "${BINARIES[@]}"
else
    echo "==> building ($PROFILE)"
    # Exactly what `cargo test --locked --workspace` builds (the same features, the same
    # profile), both binaries included: after the tests (CI) there is nothing left to build.
    cargo test --locked -q --workspace --no-run
fi
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"
[ -z "$BIN_DIR" ] || TARGET=$BIN_DIR

[ -n "$DIR" ] || DIR="$ROOT/target/testnet/run-$(date +%Y%m%d-%H%M%S)-$$"
if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
    echo "--dir $DIR is not empty: a run directory must be fresh" >&2; exit 2
fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
echo "==> run directory: $DIR"

# --- network namespaces (--netns) -----------------------------------------------------------------
# `p2pmix testnet up --hosts spread|crowded` makes the bridge and a namespace per authority and
# node (p2pmixTAG-NAME, an address of 100.64.0.0/10: RFC 6598 shared address space, which no host
# routes; the bridge has no address, so nothing outside the namespaces can reach or be reached);
# `p2pmix testnet host` makes the clients' the same way. DIR/netns, DIR/netns-bridge and DIR/hosts
# list what was made; `p2pmix testnet down` (testnet/stop.sh) removes it.
declare -A NS_OF IP_OF
NSX=()          # the prefix that runs a command in a process's namespace (set by in_ns)
# Makes process $1's host (once) and prints nothing; afterwards IP_OF[$1] is its address.
ns_add() {
    [ -n "$NETNS" ] || return 0
    [ -z "${NS_OF[$1]:-}" ] || return 0
    local host
    host=$("$BIN" testnet host --dir "$DIR" "$1") || fail_with_log "no host for $1"
    NS_OF[$1]=${host% *}
    IP_OF[$1]=${host#* }
}
# Sets NSX to run a command in process $1's namespace (empty without --netns).
in_ns() {
    NSX=()
    if [ -n "$NETNS" ]; then ns_add "$1"; NSX=(ip netns exec "${NS_OF[$1]}"); fi
}
if [ "$BLACKHOLE_MIX" -gt 0 ] && [ -z "$BIN_DIR" ]; then
    # Hard links (a copy on another file system): the next ordinary build replaces the target
    # directory's binaries, the run keeps the ones with chaos.
    mkdir -p "$DIR/bin"
    for b in p2pmix p2pmix-testnet-report p2pmix-anonymity; do
        ln -f "$TARGET/$b" "$DIR/bin/$b" 2>/dev/null || cp "$TARGET/$b" "$DIR/bin/$b"
    done
    TARGET="$DIR/bin"
fi
BIN="$TARGET/p2pmix"
REPORT="$TARGET/p2pmix-testnet-report"

now_ms() { date +%s%3N; }
# Progress on one line: rewritten in place on a terminal, printed when it changes otherwise.
LAST_PROGRESS=""
progress() {
    if [ -t 1 ]; then printf '\r==> %s ' "$1"
    elif [ "$1" != "$LAST_PROGRESS" ]; then echo "==> $1"; fi
    LAST_PROGRESS=$1
}
end_progress() { if [ -t 1 ]; then echo; fi; }
# Records a process the script started (a client), so that `p2pmix testnet down` stops it too.
started() { "$BIN" testnet record --dir "$DIR" "$2" "$1"; }
cleanup() {
    local code=$?
    if [ "$KEEP" = 1 ]; then
        echo "==> left running; stop with: testnet/stop.sh $DIR"
    else
        "$ROOT/testnet/stop.sh" "$DIR" >/dev/null 2>&1 || true
    fi
    exit $code
}
trap cleanup EXIT
trap 'echo "error: testnet/run.sh stopped at line $LINENO" >&2' ERR
trap 'echo; echo "==> interrupted"; exit 130' INT TERM

# Waits up to $2 seconds for file $1 to have a line; prints it.
wait_line() {
    local file=$1 limit=$2 i=0
    while [ $i -lt $((limit * 10)) ]; do
        if [ -s "$file" ]; then head -n1 "$file"; return 0; fi
        sleep 0.1; i=$((i + 1))
    done
    return 1
}
# Prints the body of http://$1/metrics (bash's /dev/tcp: no curl needed).
scrape() { # $1: ADDR:PORT, $2: the process (its namespace with --netns)
    local host=${1%:*} port=${1##*:}
    in_ns "$2"
    "${NSX[@]}" timeout 5 bash -c "exec 3<>/dev/tcp/$host/$port; printf 'GET /metrics HTTP/1.0\r\nHost: $host\r\n\r\n' >&3; cat <&3" \
        | sed '1,/^\r\{0,1\}$/d'
}
fail_with_log() {
    echo "error: $1" >&2
    if [ -n "${2:-}" ] && [ -f "$2" ]; then
        echo "--- last lines of $2:" >&2
        tail -n 20 "$2" >&2
    fi
    exit 2
}

# --- authorities, nodes, the first consensus: p2pmix testnet up ---------------------------------
# A local test network (test_network = true in the consensus): everything listens on 127.0.0.1
# or on the namespaces' addresses, which production authorities refuse; nodes and clients accept
# --trace-links and --trace-truth only in one.
#
# Health measurement (docs/consensus.md, "Health") only for the black-hole drill: each authority
# sends 100 probes per node and epoch (20 a second with the default 6 mixes), and a node is
# scored from 40 known probes. A vote (at a quarter of the epoch) judges the last 20 s and their
# recent half, about 80 known probes through each node: a black hole's upper bound is then near
# 8% (under 90%: out), a mix dropping a quarter of its probes already 85%, while an honest one
# stays near 100%. So a black hole that opens in epoch e is out of the consensus of e + 1 or, if
# it opens late in e, of e + 2.
UP=(--dir "$DIR" --gateways "$GATEWAYS" --mixes "$MIXES" --epoch-ms "$EPOCH_MS"
    --wait-s $(( (4 * EPOCH_MS + 10000) / 1000 + 20 ))
    --parameter "mean_delay_us=$((MEAN_DELAY_MS * 1000))"
    --parameter "client_send_interval_us=$((SEND_INTERVAL_MS * 1000))"
    --parameter "client_loop_interval_us=$((LOOP_INTERVAL_MS * 1000))"
    --parameter "client_drop_interval_us=$((DROP_INTERVAL_MS * 1000))"
    --parameter "mix_loop_interval_us=$((MIX_LOOP_INTERVAL_MS * 1000))")
if [ "$BLACKHOLE_MIX" -gt 0 ]; then
    UP+=(--parameter health_probes_per_node=100 --parameter health_min_probes=40)
else
    UP+=(--parameter health_probes_per_node=0)
fi
[ "$CLIENTS" = 0 ] || UP+=(--traces)
[ -z "$NETNS" ] || UP+=(--hosts "$NETNS")
[ -z "$WAN" ] || UP+=(--wan "$WAN")
"$BIN" testnet up "${UP[@]}" || { echo "error: the network did not come up (logs in $DIR)" >&2; exit 2; }
GENESIS=$(sed -n 's/.*"genesis_unix_ms": *\([0-9]*\).*/\1/p' "$DIR/testnet.json")
if [ -n "$WAN" ]; then
    if grep -q '"wan_applied": *true' "$DIR/testnet.json"; then WAN_DRILL=$WAN; else WAN_DRILL=unavailable; fi
fi
# (Re)starts a node on its data dir: $1 its name, $2 (optional) the address to listen on (a
# restarted node keeps the one the consensus has), $3 a misbehaviour plan for P2PMIX_CHAOS.
start_node() {
    local args=(testnet start --dir "$DIR" "$1")
    [ -z "${2:-}" ] || args+=(--listen "$2")
    [ -z "${3:-}" ] || args+=(--env "P2PMIX_CHAOS=$3")
    "$BIN" "${args[@]}" > /dev/null || fail_with_log "$1 did not start" "$DIR/$1/log"
}

# --- the black-hole drill: which mixes, from when ------------------------------------------------
# Every node's name by its peer id (a restarted node keeps its id).
declare -A NAME_OF
for d in "$DIR"/gw* "$DIR"/mix*; do
    p=$(sed -n 's|.*/p2p/||p' "$d/data/listen-addrs" | head -n1)
    [ -z "$p" ] || NAME_OF[$p]=$(basename "$d")
done
BLACKHOLES=() FROM_MS=""
# Restarts one mix of each of the first N layers with the plan "drop everything from FROM_MS"
# (on its old port, so that the consensus's address stays right), then waits until half a
# second before FROM_MS: the senders start then, so the first messages are in flight when the
# mixes turn. Layers come from the consensus, so the mixes can only be chosen once it is out.
blackhole_start() {
    [ "$BLACKHOLE_MIX" -gt 0 ] || return 0
    local show layer peer name pid i
    show=$("$BIN" consensus show "$(ls -t "$DIR"/gw0/data/consensus-*.pb | head -n1)")
    for layer in $(seq 1 "$BLACKHOLE_MIX"); do
        peer=$(echo "$show" | awk -v l="$layer" '$1 == "node" && $3 == "Mix" && $5 == l { print $6; exit }')
        name=${NAME_OF[$peer]:-}
        [ -n "$name" ] || fail_with_log "no mix of layer $layer in the consensus to turn into a black hole"
        BLACKHOLES+=("$name")
    done
    FROM_MS=$(( $(now_ms) + 2500 + 1000 * BLACKHOLE_MIX ))
    local addrs=()
    local stopping=()
    for name in "${BLACKHOLES[@]}"; do
        addrs+=("$(head -n1 "$DIR/$name/data/listen-addrs" | sed 's|/p2p/.*||')")
        "$BIN" testnet stop --dir "$DIR" "$name" > /dev/null &
        stopping+=($!)
    done
    for pid in "${stopping[@]}"; do wait "$pid" || fail_with_log "a black hole to be did not stop"; done
    for i in "${!BLACKHOLES[@]}"; do
        name=${BLACKHOLES[$i]}
        start_node "$name" "${addrs[$i]}" "drop=1,from_unix_ms=$FROM_MS"
        echo "==> $name (layer $((i + 1))) restarted to drop everything from epoch $(( (FROM_MS - GENESIS) / EPOCH_MS )) + $(( (FROM_MS - GENESIS) % EPOCH_MS )) ms"
    done
    while [ "$(now_ms)" -lt $((FROM_MS - 500)) ]; do sleep 0.05; done
}

# --- clients ----------------------------------------------------------------------------------
LAST_GW=$((GATEWAYS - 1))
CLIENT_NAMES=()
if [ "$CLIENTS" -gt 0 ]; then
    TOTAL=$((CLIENTS * MESSAGES))
    ADDRESSES=()
    for i in $(seq 0 $((CLIENTS - 1))); do
        CLIENT_NAMES+=("c$i")
        mkdir -p "$DIR/c$i"
        gw=$(head -n1 "$DIR/gw$((i % GATEWAYS))/data/listen-addrs")
        ADDRESSES+=("$("$BIN" client address --data-dir "$DIR/c$i" --gateway "$gw")")
    done
    # Every client sends to random others, receives (and acknowledges) theirs, and stays until
    # all are done; all start sending together once each has a consensus (the go file).
    for i in $(seq 0 $((CLIENTS - 1))); do
        to=()
        for j in $(seq 0 $((CLIENTS - 1))); do [ "$j" = "$i" ] || to+=(--to "${ADDRESSES[$j]}"); done
        d="$DIR/c$i"
        in_ns "c$i"
        (exec "${NSX[@]}" env RUST_LOG=warn "$BIN" client send --json --data-dir "$d" \
            --gateway "$(head -n1 "$DIR/gw$((i % GATEWAYS))/data/listen-addrs")" \
            --authorities "$DIR/authorities.toml" "${to[@]}" --message "from c$i" \
            --count "$MESSAGES" --interval-ms "$INTERVAL_MS" --poisson \
            --wait-for "$DIR/go" --stay --timeout $((TIMEOUT + 60)) \
            --trace-links "$d/links.trace" --trace-truth "$d/truth.trace" \
            > "$d/events.jsonl" 2> "$d/log") &
        started $! "c$i"
    done
    count_events() { cat "$DIR"/c*/events.jsonl 2>/dev/null | grep -c "\"event\":\"$1\"" || true; }
    sent() { count_events sent; }
    received() { count_events received; }
    t=0
    while [ "$(count_events ready)" -lt "$CLIENTS" ]; do
        [ $t -ge 600 ] && { end_progress; fail_with_log "not every client got a consensus within 60 s" "$DIR/c0/log"; }
        progress "clients with a consensus: $(count_events ready)/$CLIENTS"
        sleep 0.1; t=$((t + 1))
    done
    end_progress
    blackhole_start
    touch "$DIR/go"
    echo "==> $CLIENTS clients (on $GATEWAYS gateways) send $MESSAGES messages each to random others, one every ${INTERVAL_MS}ms on average (cover: $COVER)"
else
    TOTAL=$MESSAGES
    CLIENT_NAMES=(alice bob)
    for c in alice bob; do mkdir -p "$DIR/$c"; done
    ALICE_GW=$(head -n1 "$DIR/gw0/data/listen-addrs")
    BOB_GW=$(head -n1 "$DIR/gw$LAST_GW/data/listen-addrs")
    BOB=$("$BIN" client address --data-dir "$DIR/bob" --gateway "$BOB_GW")
    echo "==> bob (gateway gw$LAST_GW) is $BOB"
    # Bob listens until Alice is done (he acknowledges every copy she retransmits), then is stopped.
    # (Events and logs are appended: the client drill starts both again on their data dirs.)
    start_bob() {
        in_ns bob
        (exec "${NSX[@]}" env RUST_LOG=warn "$BIN" client listen --json --data-dir "$DIR/bob" --gateway "$BOB_GW" \
            --authorities "$DIR/authorities.toml" --timeout $((TIMEOUT + 60)) \
            >> "$DIR/bob/events.jsonl" 2>> "$DIR/bob/log") &
        BOB_PID=$!
        started $BOB_PID bob
    }
    start_bob
    if [ -n "$SIZE" ]; then
        # Printable random text; head closes the pipe early, which is fine here.
        (set +o pipefail; head -c "$SIZE" /dev/urandom | base64 -w0 | head -c "$SIZE") > "$DIR/alice/message"
    else
        echo -n "hello through the mixnet" > "$DIR/alice/message"
    fi
    # In the black-hole drill Alice waits for the go file (the mixes are chosen meanwhile).
    GO=()
    [ "$BLACKHOLE_MIX" = 0 ] || GO=(--wait-for "$DIR/go")
    start_alice() { # $1: how many messages to send
        in_ns alice
        (exec "${NSX[@]}" env RUST_LOG=warn "$BIN" client send --json --data-dir "$DIR/alice" --gateway "$ALICE_GW" \
            --authorities "$DIR/authorities.toml" --to "$BOB" --file "$DIR/alice/message" \
            --count "$1" --interval-ms "$INTERVAL_MS" --timeout "$TIMEOUT" "${GO[@]}" \
            >> "$DIR/alice/events.jsonl" 2>> "$DIR/alice/log") &
        ALICE_PID=$!
        started $ALICE_PID alice
    }
    start_alice "$MESSAGES"
    if [ "$BLACKHOLE_MIX" -gt 0 ]; then
        t=0
        until grep -q '"event":"ready"' "$DIR/alice/events.jsonl" 2>/dev/null; do
            [ $t -ge 600 ] && fail_with_log "alice got no consensus within 60 s" "$DIR/alice/log"
            sleep 0.1; t=$((t + 1))
        done
        blackhole_start
        touch "$DIR/go"
    fi
    echo "==> alice (gateway gw0) sends $MESSAGES messages to bob, one every ${INTERVAL_MS}ms"
    sent() { grep -c '"event":"sent"' "$DIR/alice/events.jsonl" 2>/dev/null || true; }
    received() { grep -c '"event":"received"' "$DIR/bob/events.jsonl" 2>/dev/null || true; }
fi

# --- drills ---------------------------------------------------------------------------------------
SIG=TERM
[ "$KILL9" = 0 ] || SIG=KILL
# Waits (bounded) until a third of the messages left: the drills strike then.
a_third_sent() {
    local t=0
    while [ "$(sent)" -lt $(( (TOTAL + 2) / 3 )) ] && [ $t -lt $((TIMEOUT * 10)) ]; do sleep 0.1; t=$((t + 1)); done
}
# Stops process $1 (by name) with the drill's signal, waits until it is gone (SIGKILL after
# 10 s) and forgets it.
stop_process() {
    "$BIN" testnet stop --dir "$DIR" "$1" --signal "${SIG,,}" > /dev/null
}
KILLED=()
RESTARTED=()
if [ "$KILL_MIXES" -gt 0 ] || [ "$RESTART_GATEWAYS" -gt 0 ] || [ "$RESTART_CLIENTS" = 1 ]; then
    a_third_sent
fi
if [ "$RESTART_CLIENTS" = 1 ]; then
    stop_process alice
    stop_process bob
    SENT_BEFORE=$(sent)
    echo "==> killed alice and bob (SIG$SIG) with $SENT_BEFORE of $TOTAL messages sent"
    sleep 1
    start_bob
    # What alice had sent is in her outbox (resumed); she sends the rest.
    start_alice $((MESSAGES - SENT_BEFORE))
    RESTARTED+=(alice bob)
    echo "==> alice and bob started again on their data dirs; alice sends the other $((MESSAGES - SENT_BEFORE))"
fi
if [ "$RESTART_GATEWAYS" -gt 0 ]; then
    for i in $(seq 0 $((RESTART_GATEWAYS - 1))); do
        name="gw$((LAST_GW - i))"
        addr=$(head -n1 "$DIR/$name/data/listen-addrs" | sed 's|/p2p/.*||')
        stop_process "$name"
        echo "==> killed $name (SIG$SIG) with $(sent) of $TOTAL messages sent"
        sleep 1
        start_node "$name" "$addr"
        RESTARTED+=("$name")
        echo "==> $name started again on its data dir and address"
    done
fi
if [ "$KILL_MIXES" -gt 0 ]; then
    # Kill one mix in each of the first N layers.
    CONSENSUS=$(ls -t "$DIR"/gw0/data/consensus-*.pb | head -n1)
    SHOW=$("$BIN" consensus show "$CONSENSUS")
    for layer in $(seq 1 "$KILL_MIXES"); do
        peer=$(echo "$SHOW" | awk -v l="$layer" '$1 == "node" && $3 == "Mix" && $5 == l { print $6; exit }')
        if [ -z "$peer" ]; then echo "==> no mix of layer $layer in the consensus to kill"; continue; fi
        for m in "$DIR"/mix*; do
            if grep -q "$peer" "$m/data/listen-addrs" 2>/dev/null; then
                name=$(basename "$m")
                "$BIN" testnet stop --dir "$DIR" "$name" --signal "${SIG,,}" > /dev/null
                KILLED+=("$name")
                echo "==> killed $name (layer $layer, SIG$SIG) with $(sent) of $TOTAL messages sent"
            fi
        done
    done
fi
AUTHORITY_DRILL=""
if [ "$KILL_AUTHORITY" -gt 0 ]; then
    "$BIN" testnet stop --dir "$DIR" auth2 --signal "${SIG,,}" > /dev/null
    NOW=$(now_ms)
    EPOCH_NOW=$(( (NOW - GENESIS) / EPOCH_MS ))
    WANT=$((EPOCH_NOW + 2))
    echo "==> stopped auth2 in epoch $EPOCH_NOW; waiting for the consensus of epoch $WANT"
    AUTHORITY_DRILL="fail"
    t=0
    while [ $t -lt $(( (3 * EPOCH_MS) / 100 + 100 )) ]; do
        if [ -s "$DIR/gw0/data/consensus-$WANT.pb" ]; then
            if "$BIN" consensus verify "$DIR/gw0/data/consensus-$WANT.pb" \
                --authorities "$DIR/authorities.toml" --now-ms $(( GENESIS + WANT * EPOCH_MS )) > "$DIR/authority-drill.txt"; then
                AUTHORITY_DRILL="ok"
            fi
            break
        fi
        sleep 0.1; t=$((t + 1))
    done
    echo "==> authority drill: consensus of epoch $WANT with 2 of 3 authorities: $AUTHORITY_DRILL $(cat "$DIR/authority-drill.txt" 2>/dev/null)"
fi

# --- wait for the messages ------------------------------------------------------------------------
# Cores a process has used on average since it started: its CPU time (user + system) over its
# age, from /proc (0 when it is gone). The command name has no spaces, so fields count from 1.
cores() {
    awk -v hz="$(getconf CLK_TCK)" -v up="$(cut -d' ' -f1 /proc/uptime)" \
        '{ age = up - $22 / hz; if (age > 0) printf "%.4f", ($14 + $15) / hz / age; else print 0 }' \
        "/proc/$1/stat" 2>/dev/null || echo 0
}
# Cores used by every process whose name matches the pattern $1.
cores_of() {
    local total=0 pid name
    while read -r pid name; do
        [[ $name =~ $1 ]] || continue
        total=$(awk -v a="$total" -v b="$(cores "$pid")" 'BEGIN { printf "%.4f", a + b }')
    done < "$DIR/pids"
    echo "$total"
}
CPU_ARGS=()
if [ "$CLIENTS" -gt 0 ]; then
    t=0
    while [ "$(count_events done)" -lt "$CLIENTS" ]; do
        progress "sent $(sent), received $(received) of $TOTAL, clients done $(count_events done)/$CLIENTS"
        [ $t -ge $(( (TIMEOUT + 30) * 2 )) ] && break
        sleep 0.5; t=$((t + 1))
    done
    progress "sent $(sent), received $(received) of $TOTAL, clients done $(count_events done)/$CLIENTS"
    end_progress
    # What the run cost, measured before anyone leaves (the whole run, start-up included), and
    # how busy the machine was (other work slows the hops down).
    echo "==> load average: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
    CPU_ARGS=(--cpu "clients=$(cores_of '^c[0-9]+$')" --cpu "nodes=$(cores_of '^(gw|mix)[0-9]+$')" \
        --cpu "authorities=$(cores_of '^auth[0-9]+$')")
    # Every client leaves like Ctrl-C: last acknowledgements out, trace files closed.
    for c in "${CLIENT_NAMES[@]}"; do
        pid=$(awk -v n="$c" '$2 == n { print $1 }' "$DIR/pids"); kill -INT "$pid" 2>/dev/null || true
    done
    for c in "${CLIENT_NAMES[@]}"; do
        pid=$(awk -v n="$c" '$2 == n { print $1 }' "$DIR/pids")
        for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    ANONYMITY=(--anonymity "$DIR")
else
    t=0
    while kill -0 "$ALICE_PID" 2>/dev/null; do
        progress "sent $(sent), received $(received) of $MESSAGES, acknowledged $(grep -c '"event":"delivered"' "$DIR/alice/events.jsonl" 2>/dev/null || true)"
        [ $t -ge $(( (TIMEOUT + 30) * 2 )) ] && break
        sleep 0.5; t=$((t + 1))
    done
    progress "sent $(sent), received $(received) of $MESSAGES, acknowledged $(grep -c '"event":"delivered"' "$DIR/alice/events.jsonl" 2>/dev/null || true)"
    end_progress
    # Bob leaves like Ctrl-C: his last acknowledgements go out and what arrived is printed.
    kill -INT "$BOB_PID" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$BOB_PID" 2>/dev/null || break; sleep 0.1; done
    ANONYMITY=()
fi
FIRST_MS=$(cat "$DIR"/*/events.jsonl 2>/dev/null | { grep '"event":"received"' || true; } | sed -n 's/.*"ms":\([0-9]*\).*/\1/p' | sort -n | sed -n 1p)
if [ -n "$FIRST_MS" ]; then
    echo "==> first message arrived $(( FIRST_MS / 1000 - STARTED ))s after the command started"
fi

# --- the black-hole drill: left out? -------------------------------------------------------------
# Every consensus auth0 published, in epoch order: who was left out for health, first in which
# epoch, and why. A black hole that opens in epoch e must be out by the consensus of e + 2 (see
# the parameters); one epoch more for a loaded machine.
declare -A OUT_SINCE OUT_WHY
NEXT_EPOCH=0
scan_consensuses() {
    local e peer reason name
    for e in $(ls "$DIR/auth0/data" | sed -n 's/^consensus-\([0-9]*\)\.pb$/\1/p' | sort -n); do
        [ "$e" -ge "$NEXT_EPOCH" ] || continue
        while read -r peer reason; do
            [ -n "$peer" ] || continue
            name=${NAME_OF[$peer]:-$peer}
            if [ -z "${OUT_SINCE[$name]:-}" ]; then OUT_SINCE[$name]=$e; OUT_WHY[$name]=${reason%:}; fi
        done < <("$BIN" consensus show "$DIR/auth0/data/consensus-$e.pb" | awk '/^excluded/ { x = 1; next } x && /^  / { print $1, $2 }')
        NEXT_EPOCH=$((e + 1))
    done
}
EXCLUDED=() BLACKHOLE_DRILL=""
if [ "$BLACKHOLE_MIX" -gt 0 ]; then
    FROM_EPOCH=$(( (FROM_MS - GENESIS) / EPOCH_MS ))
    BY_EPOCH=$((FROM_EPOCH + 3))
    DEADLINE_MS=$(( GENESIS + BY_EPOCH * EPOCH_MS + 5000 ))
    while :; do
        scan_consensuses
        missing=0
        for name in "${BLACKHOLES[@]}"; do [ -n "${OUT_SINCE[$name]:-}" ] || missing=$((missing + 1)); done
        [ "$missing" = 0 ] && break
        [ "$(now_ms)" -ge "$DEADLINE_MS" ] && break
        progress "waiting for the consensus to leave out the black holes: $missing of ${#BLACKHOLES[@]} still in (consensus of epoch $((NEXT_EPOCH - 1)))"
        sleep 0.5
    done
    end_progress
    BLACKHOLE_DRILL=ok
    for name in "${BLACKHOLES[@]}"; do
        if ! grep -q "chaos: misbehaving" "$DIR/$name/log"; then
            echo "==> $name never started to misbehave: were the binaries built with --features p2pmix/chaos?"
            BLACKHOLE_DRILL=fail
        fi
        e=${OUT_SINCE[$name]:-}
        if [ -n "$e" ] && [ "$e" -le "$BY_EPOCH" ]; then
            echo "==> black hole $name (dropping from epoch $FROM_EPOCH) left out of the consensus of epoch $e (${OUT_WHY[$name]})"
        else
            echo "==> black hole $name (dropping from epoch $FROM_EPOCH) still in the consensus of epoch $((NEXT_EPOCH - 1))${e:+ (left out only in epoch $e)}"
            BLACKHOLE_DRILL=fail
        fi
    done
    for name in "${!OUT_SINCE[@]}"; do
        [[ " ${BLACKHOLES[*]} " == *" $name "* ]] && continue
        echo "==> honest $name left out of the consensus of epoch ${OUT_SINCE[$name]} (${OUT_WHY[$name]})"
        BLACKHOLE_DRILL=fail
    done
    mapfile -t EXCLUDED < <(printf '%s\n' "${!OUT_SINCE[@]}" | sort)
fi

# --- report ---------------------------------------------------------------------------------------
for d in "$DIR"/gw* "$DIR"/mix*; do
    name=$(basename "$d")
    if [ -s "$d/data/metrics-addr" ] && pid=$(awk -v n="$name" '$2 == n { print $1 }' "$DIR/pids") && kill -0 "$pid" 2>/dev/null; then
        scrape "$(head -n1 "$d/data/metrics-addr")" "$name" > "$d/metrics.txt" 2>/dev/null || true
    fi
done
set +e
EVENTS=()
if [ "$CLIENTS" -gt 0 ]; then
    # The nodes close their trace files when they stop (a kept network goes on writing them).
    [ "$KEEP" = 1 ] || "$ROOT/testnet/stop.sh" "$DIR" > /dev/null 2>&1
    for c in "${CLIENT_NAMES[@]}"; do EVENTS+=(--sent "$DIR/$c/events.jsonl" --received "$DIR/$c/events.jsonl"); done
else
    wait "$ALICE_PID"; ALICE_CODE=$?
    [ "$ALICE_CODE" = 0 ] || echo "==> the sending client exited with status $ALICE_CODE (see $DIR/alice/log)"
    EVENTS=(--sent "$DIR/alice/events.jsonl" --received "$DIR/bob/events.jsonl")
fi
# Every node in one /16 (--netns-crowded): a route may not put two hops in one /16, so none
# can be built and nothing may arrive; the run passes when that rule held (said before the
# report, whose JSON line stays the last).
CROWDED_CODE=""
if [ "$NETNS" = crowded ]; then
    if [ "$(received)" = 0 ]; then
        echo "==> --netns-crowded: every node in 100.64.0.0/16, no route keeps its hops in different /16s: 0 of $TOTAL delivered, the diversity rule held"
        CROWDED_CODE=0
    else
        echo "==> --netns-crowded: $(received) of $TOTAL delivered although every node is in one /16: the diversity rule did not hold"
        CROWDED_CODE=1
    fi
fi
# A failed run is the report's verdict, not a script error (the ERR trap stays quiet).
CODE=0
"$REPORT" --expected "$TOTAL" "${EVENTS[@]}" \
    --mean-delay-ms "$MEAN_DELAY_MS" --layers 3 --send-interval-ms "$SEND_INTERVAL_MS" \
    --plot "$DIR/report.png" --summary "$DIR/summary.txt" \
    ${AUTHORITY_DRILL:+--drill "authority=$AUTHORITY_DRILL"} \
    ${BLACKHOLE_DRILL:+--drill "blackhole=$BLACKHOLE_DRILL" --excluded "$(IFS=,; echo "${EXCLUDED[*]}")"} \
    ${KILLED[@]:+--drill "killed=${KILLED[*]}"} ${RESTARTED[@]:+--drill "restarted=${RESTARTED[*]}"} \
    ${NETNS:+--drill "netns=$NETNS"} ${WAN_DRILL:+--drill "wan=$WAN_DRILL"} \
    --drill "signal=SIG$SIG" "${ANONYMITY[@]}" "${CPU_ARGS[@]}" || CODE=$?
if [ -n "$CROWDED_CODE" ]; then CODE=$CROWDED_CODE; fi
set -e
exit $CODE
