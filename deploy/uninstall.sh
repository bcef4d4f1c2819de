#!/bin/sh
# Remove what deploy/install.sh installed.
#
#     sudo deploy/uninstall.sh            # the program, the unit and the user
#     sudo deploy/uninstall.sh --purge    # and the config, the token and the queue
#     DESTDIR=/tmp/stage deploy/uninstall.sh   # from a staged tree
#
# Stops and disables ingestd.service, then removes the unit, /opt/ingestd, the
# admin command /usr/local/bin/ingestd, the sysusers.d file, the guide and the
# ingestd user. /etc/ingestd (config and token) and /var/lib/ingestd (the queue:
# history and the memory of what was already uploaded) are kept unless --purge;
# a later install.sh picks them up again. The ingest folders under /srv/ingest
# hold people's files and are never touched.
#
# Environment: DESTDIR, UNITDIR and SYSUSERSDIR as for install.sh.
set -eu

usage() {
    sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p;}' "$0"
}

PURGE=0
for arg in "$@"; do
    case $arg in
        --purge) PURGE=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "uninstall.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

DESTDIR=${DESTDIR:-}
UNITDIR=${UNITDIR:-/etc/systemd/system}
SYSUSERSDIR=${SYSUSERSDIR:-/usr/lib/sysusers.d}
USER_NAME=ingestd

if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
    echo "uninstall.sh: run as root, or set DESTDIR to remove a staged tree" >&2
    exit 1
fi

removed() {  # removed PATH: remove it, saying so, if it is there
    if [ -e "$DESTDIR$1" ] || [ -L "$DESTDIR$1" ]; then
        rm -rf "$DESTDIR$1"
        echo "removed  $1"
    fi
}

# 1. The service: stopped before its program goes.
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl disable --now ingestd 2>/dev/null || true
fi
removed "$UNITDIR/ingestd.service"
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi

# 2. The program and what came with it.
removed /opt/ingestd
# Only our admin command: a /usr/local/bin/ingestd of someone else's stays.
if grep -qs "runs the installed program the way ingestd.service does" "$DESTDIR/usr/local/bin/ingestd"; then
    removed /usr/local/bin/ingestd
fi
removed /usr/share/doc/ingestd
removed "$SYSUSERSDIR/ingestd.conf"

# 3. The user (its group goes with it when nobody else is in it).
if [ -z "$DESTDIR" ] && getent passwd "$USER_NAME" >/dev/null; then
    userdel "$USER_NAME"
    echo "removed  user $USER_NAME"
fi

# 4. The admin's files and the queue.
if [ "$PURGE" = 1 ]; then
    removed /etc/ingestd
    removed /var/lib/ingestd
else
    for kept in /etc/ingestd /var/lib/ingestd; do
        [ ! -e "$DESTDIR$kept" ] || echo "kept     $kept (remove it with --purge)"
    done
fi
