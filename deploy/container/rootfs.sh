#!/usr/bin/env bash
# Assembles the image's root filesystem: rootfs.sh BINARY OUT [--strip-debug]
# OUT gets usr/local/bin/p2pmix (with --strip-debug, its debug info stripped: deploy/check.sh
# builds its image from a debug build, 70 MB with line tables and 25 MB without; a release
# build keeps its line tables, so that a panic says file:line), every shared library the binary
# links (as ldd resolves them on this machine, the dynamic loader included), etc/passwd and
# etc/group with the user p2pmix (10001), etc/nsswitch.conf, and the empty data directory
# var/lib/p2pmix.
set -euo pipefail
bin="${1:?usage: rootfs.sh BINARY OUT}"
out="${2:?usage: rootfs.sh BINARY OUT}"
strip_debug=0
case "${3:-}" in
  "") ;;
  --strip-debug) strip_debug=1 ;;
  *) echo "rootfs.sh: unknown option ${3}" >&2; exit 1 ;;
esac
[ -x "$bin" ] || { echo "rootfs.sh: $bin is not an executable" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/etc" "$out/var/lib/p2pmix" "$out/tmp"
chmod 1777 "$out/tmp"
install -m 0755 "$bin" "$out/usr/local/bin/p2pmix"
# The symbol table stays, so a panic's backtrace still names its functions.
if [ "$strip_debug" = 1 ]; then
  command -v strip >/dev/null 2>&1 || { echo "rootfs.sh: --strip-debug needs strip (binutils)" >&2; exit 1; }
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
