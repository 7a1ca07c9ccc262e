# syntax=docker/dockerfile:1

# ---- builder: compiles mysqlclient and installs the project into a venv ----
FROM python:3.11-slim-bookworm AS builder

# mysqlclient has no bookworm wheel: it compiles against libmariadb's headers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        default-libmysqlclient-dev gcc libc6-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY src/ src/
COPY migrations/ migrations/
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check .

# ---- demo receiver for docker-compose.yml; not part of the controller image ----
# The controller signs webhooks itself; only this example needs standardwebhooks.
FROM python:3.11-slim-bookworm AS demo-receiver
RUN pip install --no-cache-dir --disable-pip-version-check standardwebhooks==1.1.0
WORKDIR /app
COPY examples/receiver.py examples/receiver.py
ENV PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080
CMD ["python", "examples/receiver.py", "--port", "8080"]

# ---- runtime (the default, last stage): the venv plus the MySQL client library ----
# Same base image as the builder, so the venv's python symlinks stay valid.
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends libmariadb3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --no-log-init --uid 10001 --gid app \
        --home-dir /nonexistent --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    METRICS_PORT=9100

# Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
# 9100: the controller's metrics and health; 8080: `timer-controller api`.
EXPOSE 9100 8080

# urllib raises on a refused connection or a non-2xx answer, so python exits 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:' + os.environ['METRICS_PORT'] + '/healthz', timeout=4)"]

ENTRYPOINT ["timer-controller"]
CMD ["run"]
