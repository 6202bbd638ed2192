#!/usr/bin/env bash
# maskwatch first boot: install the device daemon from this card, with no internet.
#
#   sudo bash /boot/firmware/maskwatch/firstboot.sh [--boot-dir DIR] [--no-start]
#
# `maskwatch provision` puts this file in the card's maskwatch/ folder and has the card run it
# once on first boot (cloud-init's runcmd, or Imager's firstrun.sh on Bookworm cards); running it
# again by hand is safe (systemd/install.sh changes only what differs). It
#   1. runs systemd/install.sh from the card: the wheels in wheels/ (pip --no-index, a venv over
#      the system numpy), config.toml, the secrets, the models, the unit; the service user;
#      apt only for python3-picamera2 when it is missing and the archive answers
#   2. deletes the secrets from the card once they are in /etc/maskwatch (the FAT partition can
#      be read by anyone who holds the card)
#   3. runs `maskwatch-device check` (without the camera: a first boot may come before it is
#      plugged in), enables the service and starts it (not with --no-start, nor where systemd is
#      not running, e.g. a chroot: it says so)
# Everything it prints goes to the journal (journalctl -t maskwatch-firstboot) and to
# maskwatch/firstboot.log on the card, which you can read back on the workstation.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BOOT_DIR="$(dirname "$HERE")"
INSTALL_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --boot-dir)
            [ $# -ge 2 ] || { echo "firstboot.sh: --boot-dir needs a folder" >&2; exit 2; }
            BOOT_DIR="$2"; shift ;;
        --no-start) INSTALL_ARGS+=(--no-start) ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "firstboot.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
CARD="$BOOT_DIR/maskwatch"
LOG="$CARD/firstboot.log"
TAG=maskwatch-firstboot

main() {
    echo "==> maskwatch first boot, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), from $CARD"
    # shellcheck disable=SC1091
    [ -r /etc/os-release ] && echo "    $(. /etc/os-release; echo "${PRETTY_NAME:-unknown OS}") on $(uname -m)"
    [ "$(id -u)" -eq 0 ] || { echo "firstboot.sh: error: run as root" >&2; return 1; }
    [ -d /run/systemd/system ] || echo "    systemd is not running (chroot or container): the service will be enabled, not started"
    local args=(--wheelhouse "$CARD/wheels" --config "$CARD/config.toml" --models-dir "$CARD/models")
    local f
    for f in "$CARD"/secrets/*; do
        [ -f "$f" ] && args+=(--secret "$f")
    done
    local rc=0
    bash "$CARD/systemd/install.sh" "${args[@]}" "${INSTALL_ARGS[@]}" || rc=$?
    # Secrets: off the card once their copy in /etc/maskwatch is identical (kept for a retry otherwise).
    for f in "$CARD"/secrets/*; do
        [ -f "$f" ] || continue
        if cmp -s "$f" "/etc/maskwatch/$(basename "$f")"; then
            rm -f "$f" && echo "    moved $(basename "$f") to /etc/maskwatch/ (root:maskwatch 0640); deleted from the card"
        else
            echo "    WARNING: $f was not installed; it stays on the card (readable by anyone holding it)"
        fi
    done
    rmdir "$CARD/secrets" 2>/dev/null || true
    if [ "$rc" -eq 0 ]; then
        echo "==> check"
        runuser -u maskwatch -- /opt/maskwatch/venv/bin/maskwatch-device check \
            --config /etc/maskwatch/config.toml --no-camera || rc=$?
    fi
    if [ "$rc" -eq 0 ]; then
        echo "==> first boot done: maskwatch is installed (journalctl -u maskwatch -f)"
    else
        echo "==> first boot FAILED (exit $rc): see the lines above; fix, then run again: sudo bash $CARD/firstboot.sh"
    fi
    return "$rc"
}

mkdir -p "$CARD"
if [ -S /dev/log ] && command -v logger >/dev/null 2>&1; then
    main 2>&1 | tee -a "$LOG" >(logger -t "$TAG")
else
    main 2>&1 | tee -a "$LOG"
    echo "(no journal here: this log is in $LOG only)" | tee -a "$LOG"
fi
rc=${PIPESTATUS[0]}
sync
exit "$rc"
