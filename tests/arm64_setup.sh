#!/usr/bin/env bash
# Set up what `make test-arm64` needs to run arm64 binaries here: qemu-user-static,
# binfmt-support and debootstrap from apt (when missing), binfmt_misc mounted, qemu-aarch64
# enabled. Never fails: what it cannot do, tests/arm64_emulated.py reports as its skip reason
# (and CI refuses that skip).
set -u
if [ "$(id -u)" -ne 0 ]; then
    echo "arm64_setup: not root: cannot install qemu/binfmt/debootstrap; the emulated test will say why it skips" >&2
    exit 0
fi
missing=()
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
[ -x /usr/bin/qemu-aarch64-static ] || missing+=(qemu-user-static)
command -v update-binfmts >/dev/null 2>&1 || missing+=(binfmt-support)
if [ ${#missing[@]} -gt 0 ]; then
    echo "arm64_setup: apt-get install ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || \
        echo "arm64_setup: cannot mount binfmt_misc (a container without the privilege?)" >&2
fi
if [ -e /proc/sys/fs/binfmt_misc/register ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    update-binfmts --enable qemu-aarch64 2>/dev/null || echo "arm64_setup: update-binfmts --enable qemu-aarch64 failed" >&2
fi
exit 0
