# The credit worker image: `litellm-credits`, `celery -A worker.app worker|beat|flower`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    CREDITS_ENV_FILE=""

RUN pip install --no-cache-dir "uv==0.13.9"

WORKDIR /app

# Dependencies first (cached while only the code changes), exactly as locked in uv.lock.
COPY pyproject.toml uv.lock README.md LICENSE ./
RUN uv sync --frozen --no-dev --no-install-project

# The project itself, installed editable: migrations and alembic.ini are read from /app.
COPY alembic.ini ./
COPY migrations ./migrations
COPY schemas ./schemas
COPY tasks ./tasks
COPY worker ./worker
RUN uv sync --frozen --no-dev

ENV PATH=/app/.venv/bin:$PATH

# Not root (Celery warns against it); /var/lib/celery holds beat's schedule file.
RUN useradd --system --uid 10001 --home-dir /app credits \
    && mkdir -p /var/lib/celery \
    && chown credits /var/lib/celery
USER credits

EXPOSE 9100 5555
CMD ["litellm-credits", "--help"]
