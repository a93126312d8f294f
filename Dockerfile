# One image for every service: `docker run IMAGE payments` runs `fleet run payments` (docker-compose.yml, deploy/k8s).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLEET_KEYS_DIR=/etc/eventfleet/keys \
    FLEET_LOG_FORMAT=json

WORKDIR /app
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY fleet ./fleet
COPY services ./services
RUN pip install . \
    && groupadd --system --gid 10001 fleet \
    && useradd --system --uid 10001 --gid fleet --home-dir /var/lib/eventfleet --no-create-home fleet \
    && mkdir -p /var/lib/eventfleet/data /var/lib/eventfleet/gateway /var/lib/eventfleet/tracker /etc/eventfleet/keys \
    && chown -R fleet:fleet /var/lib/eventfleet /etc/eventfleet/keys

# State (SQLite files, the mail feed) lives under /var/lib/eventfleet, keys under /etc/eventfleet/keys; both folders
# belong to the fleet user, so new named volumes mounted there (docker-compose.yml) do too.
WORKDIR /var/lib/eventfleet
USER 10001:10001
ENTRYPOINT ["fleet", "run"]
CMD ["--help"]
