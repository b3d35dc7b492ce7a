# papo: one image for the server (`papo serve`), the worker (`papo worker`) and
# migrations (`papo migrate up`). Dependencies come from the lock file.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN pip install --no-cache-dir uv==0.9.*
COPY pyproject.toml requirements-prod.lock README.md ./
RUN uv venv /opt/papo && VIRTUAL_ENV=/opt/papo uv pip install --no-cache -r requirements-prod.lock
COPY papo ./papo
RUN VIRTUAL_ENV=/opt/papo uv pip install --no-cache --no-deps .

FROM python:3.11-slim
ENV PATH=/opt/papo/bin:$PATH PYTHONUNBUFFERED=1 PAPO_HOST=0.0.0.0 PAPO_PORT=8000
RUN useradd --system --uid 10001 --no-create-home papo
COPY --from=build /opt/papo /opt/papo
USER papo
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
CMD ["papo", "serve"]
