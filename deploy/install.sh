#!/bin/sh
# Install ingestd from this source tree as a systemd service.
#
#     sudo deploy/install.sh              # install, or upgrade in place
#     DESTDIR=/tmp/stage deploy/install.sh --no-venv   # stage into a directory
#
# Layout (fixed, because ingestd.service names these paths; change them with a
# drop-in, `systemctl edit ingestd`):
#     /opt/ingestd/venv           the program, in its own virtualenv
#     /etc/ingestd/config.yaml    the config (0640 root:ingestd), never overwritten
#     /etc/ingestd/ingestd.env    the API token (0600 root:root), never overwritten
#     /var/lib/ingestd            the job queue (0750 ingestd:ingestd)
#     /srv/ingest/{inbox,done,failed}   the ingest folders, created when absent
#     /usr/local/bin/ingestd      runs ingestd as the service does: sudo ingestd status
#     /usr/share/doc/ingestd/deployment.md   the guide the unit points to
#
# Environment:
#     DESTDIR           stage under this directory; no user is created and
#                       nothing is chowned (default: empty, the real root)
#     UNITDIR           where the unit goes (default: /etc/systemd/system)
#     SYSUSERSDIR       where the sysusers.d file goes (default: /usr/lib/sysusers.d)
#     PYTHON            the interpreter for the virtualenv, 3.11 or newer (default: python3)
#     INSTALL_VENV=0    skip the virtualenv, like --no-venv
#     INGESTD_PIP_ARGS  extra arguments for `pip install`, e.g. an index URL
#
# Running it again upgrades the program and the unit and leaves the config,
# the token and the ingest folders alone.
set -eu

usage() {
    sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p;}' "$0"
}

INSTALL_VENV=${INSTALL_VENV:-1}
for arg in "$@"; do
    case $arg in
        --no-venv) INSTALL_VENV=0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

DESTDIR=${DESTDIR:-}
UNITDIR=${UNITDIR:-/etc/systemd/system}
SYSUSERSDIR=${SYSUSERSDIR:-/usr/lib/sysusers.d}
PYTHON=${PYTHON:-python3}
INGESTD_PIP_ARGS=${INGESTD_PIP_ARGS:-}

SRC=$(cd "$(dirname "$0")/.." && pwd)
USER_NAME=ingestd
VENV=/opt/ingestd/venv
CONFDIR=/etc/ingestd
STATEDIR=/var/lib/ingestd
INGEST_ROOT=/srv/ingest
DOCDIR=/usr/share/doc/ingestd
BINDIR=/usr/local/bin

# Ownership only makes sense on the real system, where the user exists.
if [ -z "$DESTDIR" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install.sh: run as root, or set DESTDIR to stage into a directory" >&2
        exit 1
    fi
    OWN=1
else
    OWN=0
fi

# install -d for a directory we own the layout of: created, mode (and owner) enforced.
make_dir() {  # make_dir MODE OWNER:GROUP PATH
    if [ "$OWN" = 1 ]; then
        install -d -m "$1" -o "${2%%:*}" -g "${2##*:}" "$DESTDIR$3"
    else
        install -d -m "$1" "$DESTDIR$3"
    fi
}

# An ingest folder may be an NFS/SMB mount with its own permissions: only create it.
make_dir_if_absent() {  # make_dir_if_absent MODE OWNER:GROUP PATH
    [ -d "$DESTDIR$3" ] || make_dir "$@"
}

# A file the admin edits: written once, never replaced.
install_file_if_absent() {  # install_file_if_absent MODE OWNER:GROUP SOURCE DEST
    if [ -e "$DESTDIR$4" ]; then
        echo "kept     $4 (already exists)"
        return
    fi
    if [ "$OWN" = 1 ]; then
        install -m "$1" -o "${2%%:*}" -g "${2##*:}" "$3" "$DESTDIR$4"
    else
        install -m "$1" "$3" "$DESTDIR$4"
    fi
    echo "wrote    $4"
}

# 1. The system user.
install -d -m 0755 "$DESTDIR$SYSUSERSDIR"
install -m 0644 "$SRC/systemd/ingestd.sysusers" "$DESTDIR$SYSUSERSDIR/ingestd.conf"
if [ "$OWN" = 1 ] && ! getent passwd "$USER_NAME" >/dev/null; then
    if command -v systemd-sysusers >/dev/null; then
        systemd-sysusers "$SYSUSERSDIR/ingestd.conf"
    else
        useradd --system --user-group --home-dir "$STATEDIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "ingestd watch-folder ingestion" "$USER_NAME"
    fi
    echo "created  user $USER_NAME"
fi

# 2. Directories.
make_dir 0750 root:$USER_NAME "$CONFDIR"
make_dir 0750 $USER_NAME:$USER_NAME "$STATEDIR"
make_dir_if_absent 0750 $USER_NAME:$USER_NAME "$INGEST_ROOT"
# setgid: files dropped by members of the ingestd group stay in that group.
make_dir_if_absent 2770 $USER_NAME:$USER_NAME "$INGEST_ROOT/inbox"
make_dir_if_absent 2750 $USER_NAME:$USER_NAME "$INGEST_ROOT/done"
make_dir_if_absent 2750 $USER_NAME:$USER_NAME "$INGEST_ROOT/failed"

# 3. Config and token: the admin's from the first run on.
install_file_if_absent 0640 root:$USER_NAME "$SRC/config.example.yaml" "$CONFDIR/config.yaml"
install_file_if_absent 0600 root:root "$SRC/deploy/ingestd.env.example" "$CONFDIR/ingestd.env"

# 4. The program.
if [ "$INSTALL_VENV" = 1 ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        echo "install.sh: $PYTHON is older than 3.11; set PYTHON=/path/to/python3.11" >&2
        exit 1
    }
    install -d -m 0755 "$DESTDIR${VENV%/*}"
    "$PYTHON" -m venv "$DESTDIR$VENV"
    # shellcheck disable=SC2086 # INGESTD_PIP_ARGS is a list of arguments
    "$DESTDIR$VENV/bin/pip" install --quiet --disable-pip-version-check $INGESTD_PIP_ARGS "$SRC"
    echo "installed ingestd into $VENV"
else
    echo "skipped  the virtualenv ($VENV)"
fi

# 5. The admin's `ingestd` command: runs the program as the service does.
install -d -m 0755 "$DESTDIR$BINDIR"
install -m 0755 "$SRC/deploy/ingestd-admin.sh" "$DESTDIR$BINDIR/ingestd"

# 6. The unit (its Documentation= points at the guide): ours, so replaced on
# every run; local changes belong in a drop-in.
install -d -m 0755 "$DESTDIR$DOCDIR"
install -m 0644 "$SRC/docs/deployment.md" "$DESTDIR$DOCDIR/deployment.md"
install -d -m 0755 "$DESTDIR$UNITDIR"
install -m 0644 "$SRC/systemd/ingestd.service" "$DESTDIR$UNITDIR/ingestd.service"
echo "wrote    $UNITDIR/ingestd.service"

cat <<EOF

Next steps:
  1. Put the API token in $CONFDIR/ingestd.env (AIOZ_STREAM_TOKEN=...).
  2. Edit $CONFDIR/config.yaml (folders, rules), then check it:
       sudo ingestd check-config
  3. Start it:
       systemctl daemon-reload && systemctl enable --now ingestd
       journalctl -u ingestd -f
EOF
