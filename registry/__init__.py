"""Model registry scanners: clamd client, pickle and safetensors checks, config.json facts, licenses (README.md)."""
