#!/usr/bin/env bash
# Checks every file under deploy/ with the tools that understand it: deploy/check.sh BINARY
# (a built p2pmix). CI runs it. promtool (from Debian's prometheus package, unpacked) and
# kubernetes-validate (PyPI, in a virtualenv) go into a temporary directory, removed at the end
# with the image built and deploy/container/rootfs; podman, where missing, is installed from
# Debian's packages (system-wide: it needs its configuration in /etc).
#  - the alert rules, and every dashboard query, with promtool
#  - the Kubernetes manifests and genconfig's ConfigMap and Secret against the Kubernetes schemas
#    (kubernetes-validate, strict: unknown fields are errors)
#  - the compose file: 3 authorities, 2 gateways, 6 mixes, each command accepted by the binary on
#    genconfig's files mounted as the file mounts them
#  - the systemd units with systemd-analyze verify, where systemd-analyze exists
#  - the image: deploy/Containerfile built offline from BINARY with podman (vfs storage); podman
#    cannot start containers on these machines (../shared/design/hosts.md), so it is inspected,
#    not run
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(realpath "${1:?usage: deploy/check.sh BINARY}")"
tmp="$(mktemp -d)"
image="localhost/p2pmix-check:$$"
# podman keeps the build's images and stages in storage of its own under $tmp (vfs: every layer a
# full copy), so nothing of the build outlives the check and the machine's own store is untouched.
podman_() { podman --root "$tmp/storage" --runroot "$tmp/runroot" --storage-driver vfs "$@"; }
cleanup() {
  if [ -d "$tmp/storage" ]; then
    podman_ rmi -a -f >/dev/null 2>&1 || true
    # Rootless, the layers' files belong to sub-uids only podman's user namespace can remove.
    [ "$(id -u)" = 0 ] || podman_ unshare rm -rf "$tmp/storage" "$tmp/runroot" 2>/dev/null || true
  fi
  rm -rf "$tmp" deploy/container/rootfs
}
trap cleanup EXIT
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

echo "-- genconfig for the manifests (Kubernetes pod names, compose service names)"
"$bin" testnet genconfig --out "$tmp/k8s" --host-pattern '{name}.{role}.p2pmix.svc.cluster.local' --test-network >/dev/null
"$bin" testnet genconfig --out "$tmp/compose" --host-pattern '{name}' --test-network >/dev/null

echo "-- promtool"
if ! command -v promtool >/dev/null 2>&1; then
  (cd "$tmp" && { apt-get download prometheus >/dev/null 2>&1 || { sudo_ apt-get update -qq && apt-get download prometheus >/dev/null; }; })
  dpkg -x "$tmp"/prometheus_*.deb "$tmp/prometheus"
  promtool="$tmp/prometheus/usr/bin/promtool"
else
  promtool=promtool
fi
"$promtool" check rules deploy/monitoring/alerts.yml
# Every dashboard query as a recording rule, its variables given values.
python3 - "$tmp/dashboard-rules.yml" <<'PY'
import json, sys
d = json.load(open("deploy/monitoring/grafana-dashboard.json"))
exprs = []
def walk(panels):
    for p in panels:
        walk(p.get("panels", []))
        exprs.extend(t["expr"] for t in p.get("targets", []))
walk(d["panels"])
assert len(exprs) >= 20, f"only {len(exprs)} queries"
with open(sys.argv[1], "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(exprs):
        e = e.replace("$__rate_interval", "5m").replace("$job", "p2pmix-.*").replace("$name", ".*")
        f.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(e)}\n")
print(f"{len(exprs)} dashboard queries")
PY
"$promtool" check rules "$tmp/dashboard-rules.yml"
"$promtool" check config "$tmp/k8s/prometheus.yml" >/dev/null 2>&1 || {
  # prometheus.yml names alerts.yml beside it.
  cp deploy/monitoring/alerts.yml "$tmp/k8s/alerts.yml"
  "$promtool" check config "$tmp/k8s/prometheus.yml"
}

echo "-- kubernetes-validate"
python3 -m venv "$tmp/venv" 2>/dev/null || {
  # Debian's python3 has venv in a package of its own.
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  python3 -m venv "$tmp/venv"
}
# Pinned: its schemas decide what passes (1.37.0 carries those of Kubernetes 1.25 to 1.37).
"$tmp/venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0
"$tmp/venv/bin/kubernetes-validate" --strict --quiet -k 1.30 deploy/kubernetes/*.yaml "$tmp/k8s/kubernetes/config.yaml"
echo "deploy/kubernetes/*.yaml and genconfig's config.yaml: valid"

echo "-- compose"
"$tmp/venv/bin/python" - "$bin" "$tmp/compose" <<'PY'
import collections, os, re, subprocess, sys, tomllib, yaml
binary, net = sys.argv[1], sys.argv[2]
c = yaml.safe_load(open("deploy/compose.yaml"))
roles = collections.Counter(name.rsplit("-", 1)[0] for name in c["services"])
assert roles == {"authority": 3, "gateway": 2, "mix": 6}, roles
for name, s in c["services"].items():
    assert s["image"] == "localhost/p2pmix:latest" and s["user"] == "10001:10001", name
    assert s["read_only"] and s["cap_drop"] == ["ALL"], name
    mounts = {}
    for v in s["volumes"]:
        src, dst = re.fullmatch(r"(.+):(/[^:]*)(?::[A-Za-z,]+)?", v).groups()
        assert src in c["volumes"] or src.startswith("${P2PMIX_NET:-./net}/"), v
        mounts[dst] = net + "/volume-" + name if src in c["volumes"] else src.replace("${P2PMIX_NET:-./net}", net)
    def local(arg):
        for dst, src in sorted(mounts.items(), key=lambda m: -len(m[0])):
            if arg.startswith(dst):
                return src + arg[len(dst):]
        return arg
    args = [local(a) for a in s["command"]]
    out = subprocess.run([binary, *args, "--print-config"], capture_output=True, text=True)
    assert out.returncode == 0, f"{name}: {args}: {out.stderr}"
    printed = tomllib.loads(out.stdout)
    for key in ("identity", "authorities"):
        assert os.path.isfile(printed[key]), f"{name}: {key} {printed[key]} is missing"
print("deploy/compose.yaml: 11 services, every command accepted")
PY

echo "-- systemd units"
if command -v systemd-analyze >/dev/null 2>&1; then
  mkdir -p "$tmp/units"
  for unit in deploy/systemd/*.service; do
    # An instance of each template, its binary the one built here.
    sed "s#/usr/local/bin/p2pmix #$bin #" "$unit" > "$tmp/units/$(basename "${unit/@/@check}")"
  done
  systemd-analyze verify --man=no "$tmp"/units/*.service
  echo "deploy/systemd: verified"
else
  echo "systemd-analyze not found: the units are not checked"
fi

echo "-- container image"
if ! command -v podman >/dev/null 2>&1; then
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman >/dev/null 2>&1 ||
    { sudo_ apt-get update -qq && sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman >/dev/null; }
fi
# A debug build: its line tables would be most of the image (and of vfs's copies of it).
deploy/container/rootfs.sh "$bin" deploy/container/rootfs --strip-debug
echo "$(df -h --output=avail "$tmp" | tail -1 | tr -d ' ') free for the build's storage in $tmp"
podman_ build -q --format docker -f deploy/Containerfile --build-arg SOURCE=prebuilt \
  --build-arg P2PMIX_GIT_COMMIT="$(git rev-parse HEAD 2>/dev/null || echo unknown)" -t "$image" . >/dev/null
inspect() { podman_ image inspect --format "$1" "$image"; }
[ "$(inspect '{{.Config.User}}')" = "10001:10001" ] || { echo "the image does not run as 10001" >&2; exit 1; }
inspect '{{.Config.Healthcheck.Test}}' | grep -q "health" || { echo "the image has no health check" >&2; exit 1; }
inspect '{{json .Config.Volumes}}' | grep -q '/var/lib/p2pmix' || { echo "no data volume" >&2; exit 1; }
echo "image built: $(inspect '{{.Size}}') bytes, user $(inspect '{{.Config.User}}'), volume /var/lib/p2pmix, health check $(inspect '{{.Config.Healthcheck.Test}}')"
# Where a runtime works, the binary must start inside it; here crun cannot (hosts.md).
if podman_ run --rm "$image" --version >/dev/null 2>&1; then
  echo "the image runs: $(podman_ run --rm "$image" --version)"
else
  echo "podman cannot start containers on this machine: the image is built and inspected, not run"
fi
