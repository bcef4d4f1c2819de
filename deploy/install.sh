#!/bin/sh
# Install ingestd from this source tree as a systemd service.
#
#     sudo deploy/install.sh              # install, or upgrade in place
#     sudo deploy/install.sh --python /usr/bin/python3.12
#     DESTDIR=/tmp/stage deploy/install.sh --no-venv   # stage into a directory
#
# Layout (fixed, because ingestd.service names these paths; change them with a
# drop-in, `systemctl edit ingestd`):
#     /opt/ingestd/venv           the program: a link to the virtualenv in use,
#                                 /opt/ingestd/venvs/<when it was built>
#     /etc/ingestd/config.yaml    the config (0640 root:ingestd), never overwritten
#     /etc/ingestd/ingestd.env    the API token (0600 root:root), never overwritten
#     /var/lib/ingestd            the job queue (0750 ingestd:ingestd)
#     /srv/ingest/{inbox,done,failed}   the ingest folders, created when absent;
#                                 a new inbox is setgid ingestd with default ACLs,
#                                 so what people create in it stays group-writable
#     /usr/local/bin/ingestd      runs ingestd as the service does: sudo ingestd status
#     /usr/share/doc/ingestd/deployment.md   the guide the unit points to
#
# The interpreter must be one the ingestd user can run: a system Python, never
# one under /root or /home (which the unit's ProtectHome=yes hides anyway). By
# default the first of /usr/bin/python3, python3.13, python3.12, python3.11 that
# is 3.11 or newer; --python PATH (or PYTHON=PATH) names another.
#
# Upgrading is running it again: the new virtualenv is built beside the one in
# use and swapped in only once its `ingestd --version` runs as the ingestd user;
# on any failure before that the installed ingestd is unchanged. The config, the
# token, the queue and the ingest folders are kept. The service is restarted
# only if it was running. The install ends by running the installed `ingestd
# --version` and `ingestd check-config` as the ingestd user, and fails if either
# does not work.
#
# Environment:
#     DESTDIR           stage under this directory; no user is created, nothing
#                       is chowned or run as the service user (default: empty,
#                       the real root)
#     UNITDIR           where the unit goes (default: /etc/systemd/system)
#     SYSUSERSDIR       where the sysusers.d file goes (default: /usr/lib/sysusers.d)
#     PYTHON            the interpreter for the virtualenv, like --python
#     INSTALL_VENV=0    skip the virtualenv, like --no-venv
#     INGESTD_PIP_ARGS  extra arguments for `pip install`, e.g. an index URL
#
# deploy/uninstall.sh removes it again.
set -eu

usage() {
    sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p;}' "$0"
}

fail() {
    echo "install.sh: $*" >&2
    exit 1
}

INSTALL_VENV=${INSTALL_VENV:-1}
PYTHON=${PYTHON:-}
while [ $# -gt 0 ]; do
    case $1 in
        --no-venv) INSTALL_VENV=0 ;;
        --python) [ $# -ge 2 ] || { echo "install.sh: --python needs a PATH" >&2; exit 2; }; PYTHON=$2; shift ;;
        --python=*) PYTHON=${1#--python=} ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

DESTDIR=${DESTDIR:-}
UNITDIR=${UNITDIR:-/etc/systemd/system}
SYSUSERSDIR=${SYSUSERSDIR:-/usr/lib/sysusers.d}
INGESTD_PIP_ARGS=${INGESTD_PIP_ARGS:-}

SRC=$(cd "$(dirname "$0")/.." && pwd)
USER_NAME=ingestd
PREFIX=/opt/ingestd
VENV=$PREFIX/venv
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

# 0. The interpreter, checked before anything changes.
is_new_enough() {
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

if [ "$INSTALL_VENV" = 1 ]; then
    if [ -z "$PYTHON" ]; then
        for candidate in /usr/bin/python3 /usr/bin/python3.13 /usr/bin/python3.12 /usr/bin/python3.11; do
            if [ -x "$candidate" ] && is_new_enough "$candidate"; then
                PYTHON=$candidate
                break
            fi
        done
        [ -n "$PYTHON" ] || fail "no system Python 3.11 or newer in /usr/bin; install one (apt install python3 python3-venv) or name one with --python PATH"
    fi
    command -v "$PYTHON" >/dev/null || fail "$PYTHON: no such interpreter"
    is_new_enough "$PYTHON" || fail "$PYTHON is not Python 3.11 or newer; name another with --python PATH"
    # The interpreter behind shims and virtualenvs: the one the new virtualenv will point at.
    REAL_PYTHON=$("$PYTHON" -c 'import os, sys; print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))')
    case $REAL_PYTHON in
        /root/*|/home/*)
            fail "$PYTHON is $REAL_PYTHON, under a home directory: the $USER_NAME user cannot run it (and ProtectHome=yes hides it from the service); use a system Python, e.g. --python /usr/bin/python3" ;;
    esac
    "$REAL_PYTHON" -c 'import venv, ensurepip' 2>/dev/null ||
        fail "$REAL_PYTHON cannot make virtualenvs (no ensurepip); install its venv package, e.g. apt install python3-venv"
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

# 1. The system user, and proof that it can run the interpreter.
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
if [ "$OWN" = 1 ] && [ "$INSTALL_VENV" = 1 ]; then
    runuser -u "$USER_NAME" -- "$REAL_PYTHON" -c 'import sys' 2>/dev/null ||
        fail "the $USER_NAME user cannot run $REAL_PYTHON (a folder on its way is closed to it); use a system Python, e.g. --python /usr/bin/python3"
fi

# 2. Directories.
make_dir 0750 root:$USER_NAME "$CONFDIR"
make_dir 0750 $USER_NAME:$USER_NAME "$STATEDIR"
if [ "$OWN" = 1 ]; then
    # Kept from an earlier install (uninstall keeps it): the queue belongs to the user as it is now.
    chown -R "$USER_NAME:$USER_NAME" "$STATEDIR"
fi
make_dir_if_absent 0750 $USER_NAME:$USER_NAME "$INGEST_ROOT"
INBOX_IS_NEW=0
[ -d "$DESTDIR$INGEST_ROOT/inbox" ] || INBOX_IS_NEW=1
# setgid: files dropped by members of the ingestd group stay in that group.
make_dir_if_absent 2770 $USER_NAME:$USER_NAME "$INGEST_ROOT/inbox"
make_dir_if_absent 2750 $USER_NAME:$USER_NAME "$INGEST_ROOT/done"
make_dir_if_absent 2750 $USER_NAME:$USER_NAME "$INGEST_ROOT/failed"
# Default ACLs: a subfolder or file someone creates in the inbox with their own
# umask (077, say) is still group-writable, so ingestd can move files out of it.
# Only on an inbox made here: a mounted share has its own settings
# (docs/deployment.md gives the Samba and NFS ones).
if [ "$INBOX_IS_NEW" = 1 ]; then
    if command -v setfacl >/dev/null; then
        setfacl -m d:u::rwx,d:g::rwx,d:m::rwx,d:o::--- "$DESTDIR$INGEST_ROOT/inbox"
        echo "set      default ACLs on $INGEST_ROOT/inbox (group rwx whatever the umask)"
    else
        echo "note: setfacl is missing (apt install acl): what people create in $INGEST_ROOT/inbox follows their umask" >&2
    fi
fi

# 3. Config and token: the admin's from the first run on.
install_file_if_absent 0640 root:$USER_NAME "$SRC/config.example.yaml" "$CONFDIR/config.yaml"
install_file_if_absent 0600 root:root "$SRC/deploy/ingestd.env.example" "$CONFDIR/ingestd.env"

# 4. The admin's `ingestd` command: runs the program as the service does.
install -d -m 0755 "$DESTDIR$BINDIR"
install -m 0755 "$SRC/deploy/ingestd-admin.sh" "$DESTDIR$BINDIR/ingestd"

# 5. The program: a new virtualenv beside the one in use, swapped in once it runs.
NEW=
if [ "$INSTALL_VENV" = 1 ]; then
    install -d -m 0755 "$DESTDIR$PREFIX" "$DESTDIR$PREFIX/venvs"
    NEW=$PREFIX/venvs/$(date +%Y%m%d-%H%M%S)-$$
    # Whatever happens before the swap, no half-built virtualenv stays behind.
    trap 'rm -rf "$DESTDIR$NEW"' EXIT
    "$REAL_PYTHON" -m venv "$DESTDIR$NEW" ||
        fail "could not make a virtualenv with $REAL_PYTHON; the installed ingestd is unchanged"
    # shellcheck disable=SC2086 # INGESTD_PIP_ARGS is a list of arguments
    "$DESTDIR$NEW/bin/pip" install --quiet --disable-pip-version-check $INGESTD_PIP_ARGS "$SRC" ||
        fail "pip could not install ingestd into $NEW; the installed ingestd is unchanged"
    if [ "$OWN" = 1 ]; then
        VERSION=$(runuser -u "$USER_NAME" -- "$NEW/bin/ingestd" --version) ||
            fail "the $USER_NAME user cannot run $NEW/bin/ingestd; the installed ingestd is unchanged"
    else
        VERSION=$("$DESTDIR$NEW/bin/ingestd" --version) ||
            fail "$NEW/bin/ingestd does not run; the installed ingestd is unchanged"
    fi
    # The swap is the rename of a symlink. A virtualenv from before this layout is
    # a directory in the way: it moves aside and goes with the other old ones.
    if [ -d "$DESTDIR$VENV" ] && [ ! -L "$DESTDIR$VENV" ]; then
        mv "$DESTDIR$VENV" "$DESTDIR$PREFIX/venvs/replaced-$$"
    fi
    ln -sfn "venvs/${NEW##*/}" "$DESTDIR$VENV.new"
    mv -T "$DESTDIR$VENV.new" "$DESTDIR$VENV"
    trap - EXIT
    echo "installed $VERSION into $VENV (Python: $REAL_PYTHON)"
else
    echo "skipped  the virtualenv ($VENV)"
fi

# 6. The unit (its Documentation= points at the guide): ours, so replaced on
# every run; local changes belong in a drop-in.
install -d -m 0755 "$DESTDIR$DOCDIR"
install -m 0644 "$SRC/docs/deployment.md" "$DESTDIR$DOCDIR/deployment.md"
install -d -m 0755 "$DESTDIR$UNITDIR"
install -m 0644 "$SRC/systemd/ingestd.service" "$DESTDIR$UNITDIR/ingestd.service"
echo "wrote    $UNITDIR/ingestd.service"

# 7. A running service picks up the new program; a stopped one stays stopped.
if [ "$OWN" = 1 ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ "$INSTALL_VENV" = 1 ] && systemctl is-active --quiet ingestd; then
        systemctl restart ingestd
        echo "restarted ingestd.service"
    fi
fi

# 8. The virtualenvs nothing runs from any more.
if [ -n "$NEW" ]; then
    for old in "$DESTDIR$PREFIX"/venvs/*; do
        [ "$old" = "$DESTDIR$NEW" ] || rm -rf "$old"
    done
fi

# 9. The proof: the installed program runs as the service user and reads the config.
if [ "$OWN" = 1 ] && [ -e "$VENV/bin/ingestd" ]; then
    "$BINDIR/ingestd" --version >/dev/null || fail "the installed ingestd does not run as the $USER_NAME user"
    (
        # As the unit runs it: the environment file, then the program as the service user.
        set -a
        [ ! -f "$CONFDIR/ingestd.env" ] || . "$CONFDIR/ingestd.env"
        set +a
        if [ "${AIOZ_STREAM_TOKEN-unset}" = "" ]; then
            # A first install has no token yet: check everything else, with a stand-in for it.
            echo "note: $CONFDIR/ingestd.env has no token yet; checking the rest of the config"
            AIOZ_STREAM_TOKEN=token-not-set-yet
        fi
        runuser -u "$USER_NAME" -- "$VENV/bin/ingestd" check-config --config "$CONFDIR/config.yaml"
    ) || fail "check-config failed as the $USER_NAME user (above): fix $CONFDIR/config.yaml, then run install.sh again"
fi

cat <<EOF

Next steps:
  1. Put the API token in $CONFDIR/ingestd.env (AIOZ_STREAM_TOKEN=...).
  2. Edit $CONFDIR/config.yaml (folders, rules), then check it as the service reads it:
       sudo ingestd check-config
  3. Start it:
       sudo systemctl enable --now ingestd
       journalctl -u ingestd -f
EOF
