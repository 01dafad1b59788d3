# tokenpulse service image. Migrations run at start; configure with TOKENPULSE_* variables.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

RUN useradd --create-home --uid 10001 tokenpulse
WORKDIR /app

COPY pyproject.toml README.md alembic.ini ./
COPY migrations ./migrations
COPY src ./src
# Editable, so that the service finds alembic.ini and migrations/ beside its source.
RUN pip install -e .

USER tokenpulse
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"
CMD ["tokenpulse", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
