"""A vLLM-compatible simulated inference runtime for machines without GPUs.

`python -m runtime serve MODEL ...` takes the same argv as `vllm serve` (plus `--sim-*` timing flags), speaks the same
HTTP interface (/health, /v1/models, /v1/completions, /v1/chat/completions with SSE streaming, /metrics with vLLM's
Prometheus names) and times tokens like a continuously batching engine, so the control plane deploys, health-checks,
routes to and monitors it exactly as it would a real vLLM server.
"""
