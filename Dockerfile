# imagine-bot on an NVIDIA GPU, with compose (see compose.yaml and docs/operator/docker.md):
#   cp .env.example .env                        # tokens
#   docker compose build
#   docker compose run --rm bot download        # the weights, into the models volume
#   docker compose up -d
# The image's /app/config.toml (deploy/config.docker.toml) puts data in /data and the model in
# /models/sdxl-lightning; mount your own config.toml over it to change more.
FROM python:3.11-slim

# The tested torch line (constraints.txt), as a CUDA build.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/models/hf-cache
WORKDIR /app

COPY constraints.txt ./
RUN pip install --index-url "$TORCH_INDEX" -c constraints.txt torch==2.13.0
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY generation ./generation
COPY storage ./storage
# with the web front end's packages, so [web] enabled = true works in the image
RUN pip install -c constraints.txt '.[web]' \
    && useradd --create-home --uid 1000 imagine \
    && mkdir -p /data /models \
    && chown imagine:imagine /data /models
COPY config.example.toml ./
COPY deploy/config.docker.toml ./config.toml

USER imagine
VOLUME ["/data", "/models"]
# Telegram webhook mode listens on 8443 ([telegram.webhook] port); long polling needs no port.
# The web front end ([web] enabled, listen = "0.0.0.0" in a container) on 8080 ([web] port).
EXPOSE 8443 8080
# SIGTERM: the running batch finishes and is stored (compose gives it stop_grace_period).
STOPSIGNAL SIGTERM
# `imagine-bot health`: with [web] enabled, GET /healthz must answer 200 (model loaded, database
# writable); otherwise /data/heartbeat.json, rewritten every 10 s, must be fresh. Loading the
# model takes minutes.
HEALTHCHECK --interval=30s --timeout=15s --start-period=15m --retries=3 CMD ["imagine-bot", "health"]
ENTRYPOINT ["imagine-bot"]
CMD ["run"]
