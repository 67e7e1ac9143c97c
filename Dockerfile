# convstore: one image for `convstore api` (default) and `convstore projector`.
# Configure through CONVSTORE_* environment variables (see README.md), at least
# CONVSTORE_NATS_URL, e.g. nats://nats:4222.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY convstore ./convstore
COPY events ./events
COPY projections ./projections
COPY api ./api
COPY workers ./workers
RUN pip install . \
    && useradd --create-home --uid 10001 convstore

USER convstore
WORKDIR /home/convstore

# `convstore api` listens on 127.0.0.1 unless told otherwise: in a container, listen on all.
ENV CONVSTORE_HOST=0.0.0.0 \
    CONVSTORE_PORT=8000
EXPOSE 8000

CMD ["convstore", "api"]
