# tokenpulse service image: the wheel alone, without the embedded PostgreSQL, so
# TOKENPULSE_DATABASE_URL is required. Migrations run at start; configure with TOKENPULSE_*.

FROM python:3.11-slim AS wheel
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --gid 10001 tokenpulse \
    && useradd --create-home --uid 10001 --gid 10001 tokenpulse
# Mounted, not copied: the wheel itself stays out of the image's layers.
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install /wheels/tokenpulse-*.whl

# Numeric, so that a runtime can tell without the image's /etc/passwd that it is not root.
USER 10001:10001
WORKDIR /home/tokenpulse
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
CMD ["tokenpulse", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
