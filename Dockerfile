# imagine-bot on an NVIDIA GPU. Build:  docker build -t imagine-bot .
# Run:    docker run --gpus all -e DISCORD_TOKEN -e TELEGRAM_TOKEN \
#           -v $PWD/config.toml:/app/config.toml:ro -v imagine-models:/models -v imagine-data:/data \
#           imagine-bot
# config.toml should set storage.data_dir = "/data" (and model.cache_dir = "/models/hf-cache").
FROM pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/models/hf-cache
WORKDIR /app

# The base image's CUDA torch satisfies the torch requirement; pip keeps it.
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY generation ./generation
COPY storage ./storage
RUN pip install . && useradd --create-home imagine && mkdir -p /data /models \
    && chown imagine /data /models
COPY config.example.toml ./config.example.toml

USER imagine
VOLUME ["/data", "/models"]
ENTRYPOINT ["imagine-bot"]
STOPSIGNAL SIGTERM
CMD ["run", "--config", "/app/config.toml"]
