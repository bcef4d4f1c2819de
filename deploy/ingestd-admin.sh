#!/bin/sh
# `ingestd` for the admin's shell, installed as /usr/local/bin/ingestd:
#     sudo ingestd status
#     sudo ingestd jobs list --state failed
# It runs the installed program the way ingestd.service does: as the ingestd
# user (so the queue's files stay owned by it), with the token from the
# environment file and the system config unless --config or INGESTD_CONFIG
# says otherwise.
set -eu
INGESTD=/opt/ingestd/venv/bin/ingestd
ENV_FILE=/etc/ingestd/ingestd.env

if [ "$(id -u)" != 0 ]; then
    exec "$INGESTD" "$@"
fi
if [ -f "$ENV_FILE" ]; then
    set -a
    # shellcheck source=/dev/null
    . "$ENV_FILE"
    set +a
fi
INGESTD_CONFIG=${INGESTD_CONFIG:-/etc/ingestd/config.yaml}
export INGESTD_CONFIG
exec runuser -u ingestd -- "$INGESTD" "$@"
