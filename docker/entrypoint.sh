#!/bin/sh
# Container entrypoint: run the command (default `cloudplow run`) as the
# unprivileged user cloudplow, with the uid:gid that owns the files on the host
# (PUID:PGID, default 1000:1000). As root it first adjusts that user and hands
# it /config, /config/state and /config/rclone.conf; never anything under the
# media folder, which can be huge. Started as another user (--user) it only
# runs the command.
set -eu

config_dir=/config
state_dir="$config_dir/state"
config_file="${CLOUDPLOW_CONFIG:-$config_dir/config.yaml}"

log() {
    echo "cloudplow-entrypoint: $*" >&2
}

# `docker run IMAGE --config X status` means cloudplow's options, not a program.
if [ "$#" -eq 0 ]; then
    set -- cloudplow run
fi
case "$1" in
    -*) set -- cloudplow "$@" ;;
esac

if [ ! -e "$config_file" ]; then
    log "no configuration at $config_file: copy /usr/local/share/cloudplow/config.yaml" \
        "(docker/config.yaml in the repository) there and edit it"
fi

if [ "$(id -u)" -ne 0 ]; then
    exec "$@"
fi

puid="${PUID:-1000}"
pgid="${PGID:-1000}"
for number in "$puid" "$pgid"; do
    case "$number" in
        '' | *[!0-9]*)
            log "PUID and PGID must be numbers, got PUID=$puid PGID=$pgid"
            exit 2
            ;;
    esac
done

# -o: the host's ids may already be taken inside the image (PGID=100 is "users").
if ! getent group cloudplow >/dev/null; then
    groupadd -o -g "$pgid" cloudplow
elif [ "$(getent group cloudplow | cut -d: -f3)" != "$pgid" ]; then
    groupmod -o -g "$pgid" cloudplow
fi
if ! getent passwd cloudplow >/dev/null; then
    useradd -o -u "$puid" -g "$pgid" -d /home/cloudplow -M -s /usr/sbin/nologin cloudplow
elif [ "$(getent passwd cloudplow | cut -d: -f3,4)" != "$puid:$pgid" ]; then
    usermod -o -u "$puid" -g "$pgid" cloudplow
fi

# A read-only or root-squashed /config makes chown fail: say so and go on, so
# cloudplow itself reports what it cannot write.
# -h everywhere: whoever can write ./config on the host must not get root to
# hand them a file elsewhere through a symbolic link (/config/rclone.conf ->
# /etc/shadow). A link's own owner changes, never its target's; -R follows none.
take() {
    chown -h "$@" || log "cannot chown $*; cloudplow may not be able to write there"
}
mkdir -p /home/cloudplow
take "$puid:$pgid" /home/cloudplow "$config_dir"
if [ -L "$state_dir" ]; then
    log "$state_dir is a symbolic link: not following it; its target must be writable by $puid:$pgid"
else
    mkdir -p "$state_dir"
    # The ledger and its locks: small, and left owned by the previous PUID after a change.
    take -R "$puid:$pgid" "$state_dir"
    # For cloudplow's user only, like what it writes there from now on (umask below).
    chmod -R go-rwx "$state_dir" || log "cannot chmod $state_dir"
fi
if [ -L "$config_dir/rclone.conf" ]; then
    log "$config_dir/rclone.conf is a symbolic link: not changing the owner of its target"
elif [ -f "$config_dir/rclone.conf" ]; then
    take "$puid:$pgid" "$config_dir/rclone.conf"
fi

# The ledger, its locks, rclone's refreshed tokens: nothing cloudplow writes is for other users.
umask 077
# setpriv keeps the environment: give rclone a home it can write its cache in.
export HOME=/home/cloudplow USER=cloudplow LOGNAME=cloudplow
exec setpriv --reuid cloudplow --regid cloudplow --init-groups -- "$@"
