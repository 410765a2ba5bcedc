# Bastion as a container: streamable HTTP on port 8000 at /mcp.
# Mount a config at /etc/bastion/bastion.yaml (or set BASTION_CONFIG); DSN passwords via ${VARS}.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY server ./server
COPY tools ./tools
COPY evals ./evals
COPY policies ./policies
# editable, so the shipped policies/ (Cedar files, schema, tests) stay beside the code that reads them
RUN pip install -e . && useradd --system --home /var/lib/bastion --create-home bastion
USER bastion
WORKDIR /var/lib/bastion
EXPOSE 8000
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
ENTRYPOINT ["bastion"]
CMD ["serve", "--transport", "http", "--host", "0.0.0.0", "--port", "8000"]
