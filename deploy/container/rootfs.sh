#!/usr/bin/env bash
# Assembles the image's root filesystem: rootfs.sh BINARY OUT
# OUT gets usr/local/bin/p2pmix (its debug info stripped where binutils' strip exists: a debug
# build is 70 MB with line tables, 25 MB without), every shared library the binary links (as ldd
# resolves them on this machine, the dynamic loader included), etc/passwd and etc/group with the
# user p2pmix (10001), etc/nsswitch.conf, and the empty data directory var/lib/p2pmix.
set -euo pipefail
bin="${1:?usage: rootfs.sh BINARY OUT}"
out="${2:?usage: rootfs.sh BINARY OUT}"
[ -x "$bin" ] || { echo "rootfs.sh: $bin is not an executable" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/etc" "$out/var/lib/p2pmix" "$out/tmp"
chmod 1777 "$out/tmp"
install -m 0755 "$bin" "$out/usr/local/bin/p2pmix"
# The symbol table stays, so a panic's backtrace still names its functions.
if command -v strip >/dev/null 2>&1; then
  strip --strip-debug "$out/usr/local/bin/p2pmix"
fi
# Every absolute path ldd prints: the libraries and the loader.
ldd "$bin" | grep -o '/[^ )]*' | sort -u | while read -r lib; do
  mkdir -p "$out$(dirname "$lib")"
  cp -L "$lib" "$out$lib"
done
printf 'root:x:0:0::/:/nonexistent\np2pmix:x:10001:10001::/var/lib/p2pmix:/nonexistent\n' > "$out/etc/passwd"
printf 'root:x:0:\np2pmix:x:10001:\n' > "$out/etc/group"
printf 'hosts: files dns\n' > "$out/etc/nsswitch.conf"
echo "rootfs.sh: $(du -sh "$out" | cut -f1) in $out"
