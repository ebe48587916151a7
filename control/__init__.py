"""The control-plane domain, above budsim and registry: payloads, typed stores, planning, monitoring and
autoscaling policy, the translation between API and optimizer types, and the capacity rules."""
