#!/usr/bin/env bash
# Builds the kubevm test guest: a Debian kernel and a busybox-static initramfs,
# from Debian packages (apt-get download + dpkg -x; nothing is installed).
#
# Outputs, under <repo>/.cache/guest/ (or $KUBEVM_GUEST_DIR):
#   vmlinuz      the kernel (direct kernel boot: -kernel)
#   initrd.img   busybox + the kernel modules the guest needs + /init
#   guest.json   what was built (kernel package, flavour, modules, hash)
#
# Idempotent: exits at once when the outputs exist and were built by the same
# version of the files in tests/guest/ (their sha256 is recorded). A flock
# serialises concurrent callers (jest runs suites in parallel workers).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
OUT="${KUBEVM_GUEST_DIR:-$REPO/.cache/guest}"
mkdir -p "$OUT"

exec 9>"$OUT/.lock"
flock 9

# Everything that shapes the image goes into the hash, so editing /init rebuilds.
HASH="$(cd "$HERE" && cat build.sh init udhcpc.script | sha256sum | cut -d' ' -f1)"
if [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.img" ] && [ "$(cat "$OUT/build.hash" 2>/dev/null)" = "$HASH" ]; then
  echo "guest: up to date ($OUT)"
  exit 0
fi
echo "guest: building in $OUT"
t0=$(date +%s)

# Modules the guest loads, by what it must do. The kernel flavour is chosen by
# whether all of them exist (as .ko or built in): the cloud flavour is a third
# of the size but Debian builds it without 9p, so it usually falls back.
REQUIRED_MODULES=(virtio_pci virtio_blk virtio_net 9pnet_virtio 9p virtiofs vfat nls_cp437 nls_ascii evdev button)
OPTIONAL_MODULES=(e1000e)

DEBS="$OUT/debs"
WORK="$OUT/work"
rm -rf "$WORK"
mkdir -p "$DEBS" "$WORK"

# apt-get download needs package lists; a fresh container may have none.
if ! apt-cache show busybox-static >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then apt-get update -qq; else
    echo "guest: apt package lists are empty; run 'apt-get update' as root" >&2; exit 1
  fi
fi

# Downloads a package into $DEBS unless a .deb of it is already there; prints its path.
fetch() {
  local pkg="$1" f
  f="$(ls "$DEBS/${pkg}"_*.deb 2>/dev/null | head -n1 || true)"
  if [ -z "$f" ]; then
    # apt-get download writes to the cwd; as root it warns that _apt cannot
    # write there, which is harmless.
    (cd "$DEBS" && apt-get download -q "$pkg" 2>&1 | grep -v 'unsandboxed' >&2 || true)
    f="$(ls "$DEBS/${pkg}"_*.deb 2>/dev/null | head -n1 || true)"
    # Stale package lists name versions the archive no longer has: refresh once and retry.
    if [ -z "$f" ] && [ "$(id -u)" = "0" ]; then
      apt-get update -qq
      (cd "$DEBS" && apt-get download -q "$pkg" 2>&1 | grep -v 'unsandboxed' >&2 || true)
      f="$(ls "$DEBS/${pkg}"_*.deb 2>/dev/null | head -n1 || true)"
    fi
    [ -n "$f" ] || { echo "guest: apt-get download $pkg failed" >&2; exit 1; }
  fi
  echo "$f"
}

# The versioned image package behind the linux-image-<flavour> metapackage.
kernel_pkg() {
  apt-cache depends "linux-image-$1" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}

# Prints the missing modules (empty when the tree has them all).
missing_modules() {
  local tree="$1" m
  for m in "${REQUIRED_MODULES[@]}"; do
    if ! find "$tree" -name "$m.ko" -o -name "${m//_/-}.ko" | grep -q . &&
       ! grep -qE "/(${m}|${m//_/-})\.ko\$" "$tree"/modules.builtin 2>/dev/null; then
      echo -n "$m "
    fi
  done
}

FLAVOUR=""
for flavour in cloud-amd64 amd64; do
  pkg="$(kernel_pkg "$flavour")"
  [ -n "$pkg" ] || { echo "guest: no linux-image-$flavour in the apt lists" >&2; continue; }
  if [ -e "$DEBS/$pkg.lacks" ]; then echo "guest: $pkg lacks: $(cat "$DEBS/$pkg.lacks")(checked before)"; continue; fi
  deb="$(fetch "$pkg")"
  rm -rf "$WORK/kernel"
  dpkg -x "$deb" "$WORK/kernel"
  tree="$(ls -d "$WORK"/kernel/lib/modules/*)"
  missing="$(missing_modules "$tree")"
  if [ -z "$missing" ]; then FLAVOUR="$flavour"; KPKG="$pkg"; break; fi
  echo "guest: $pkg lacks: $missing- trying the next flavour"
  echo "$missing" >"$DEBS/$pkg.lacks"
  rm -f "$deb"   # do not keep a kernel we will never use
done
[ -n "$FLAVOUR" ] || { echo "guest: no kernel flavour has all of: ${REQUIRED_MODULES[*]}" >&2; exit 1; }
KVER="$(basename "$tree")"

bbdeb="$(fetch busybox-static)"
dpkg -x "$bbdeb" "$WORK/bb"

# --- the initramfs tree
ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,dev,proc,sys,run,tmp,mnt,seed,etc,lib/modules,root}
cp "$WORK/bb/bin/busybox" "$ROOT/bin/busybox"
ln -s busybox "$ROOT/bin/sh"
install -m 0755 "$HERE/init" "$ROOT/init"
install -m 0755 "$HERE/udhcpc.script" "$ROOT/etc/udhcpc.script"
echo "root:x:0:0:root:/root:/bin/sh" >"$ROOT/etc/passwd"
echo "root:x:0:" >"$ROOT/etc/group"

# Module load order: each module after the modules named in its depends=
# (read from the .ko's .modinfo section; there is no modinfo/depmod on the host).
declare -A KO=() SEEN=()
while IFS= read -r f; do
  n="$(basename "$f" .ko)"; KO["${n//-/_}"]="$f"
done < <(find "$tree" -name '*.ko')
ORDER=()
visit() {
  local m="${1//-/_}" d deps
  [ -z "${SEEN[$m]:-}" ] || return 0
  SEEN[$m]=1
  if [ -z "${KO[$m]:-}" ]; then return 0; fi   # built in: nothing to load
  deps="$(tr '\0' '\n' <"${KO[$m]}" | sed -n 's/^depends=//p' | head -n1)"
  for d in ${deps//,/ }; do visit "$d"; done
  ORDER+=("$m")
  cp "${KO[$m]}" "$ROOT/lib/modules/$m.ko"
}
for m in "${REQUIRED_MODULES[@]}" "${OPTIONAL_MODULES[@]}"; do visit "$m"; done
printf '%s\n' "${ORDER[@]}" >"$ROOT/lib/modules/order"

# newc cpio through busybox's cpio (the host has no cpio), gzip for a smaller fw_cfg load.
(cd "$ROOT" && find . | sort | "$WORK/bb/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -6 >"$OUT/initrd.img.tmp"
cp "$WORK/kernel/boot/vmlinuz-$KVER" "$OUT/vmlinuz.tmp"
mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"

BBVER="$(dpkg-deb -f "$bbdeb" Version)"
cat >"$OUT/guest.json" <<EOF
{
  "kernelPackage": "$KPKG",
  "kernelVersion": "$KVER",
  "flavour": "$FLAVOUR",
  "busyboxVersion": "$BBVER",
  "modules": [$(printf '"%s",' "${ORDER[@]}" | sed 's/,$//')],
  "cmdline": "console=ttyS0 loglevel=4 panic=-1",
  "hash": "$HASH"
}
EOF
echo "$HASH" >"$OUT/build.hash"
rm -rf "$WORK"
echo "guest: built $KPKG ($FLAVOUR) + busybox $BBVER, initrd $(du -k "$OUT/initrd.img" | cut -f1) KiB, in $(( $(date +%s) - t0 )) s"
