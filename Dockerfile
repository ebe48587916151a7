# Image for the API, the workers and the gateway (docker-compose.temporal.yml, charts/bud-foundry).
FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir uv
COPY pyproject.toml README.md ./
COPY api api
COPY activities activities
COPY budsim budsim
COPY cli cli
COPY clusters clusters
COPY core core
COPY devstack devstack
COPY gateway gateway
COPY registry registry
COPY runtime runtime
COPY worker worker
COPY workflows workflows
RUN uv pip install --system --no-cache .
USER 1000
ENV BUD_ENV=production BUD_API_HOST=0.0.0.0
EXPOSE 8000 8080
CMD ["python", "-m", "api"]
