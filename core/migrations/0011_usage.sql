-- One row per gateway request (written in batches by the gateway). No foreign keys: a row still lands while its
-- key or project is being deleted; the API filters by project_id.
-- backend_id: the endpoint's id, or "<provider_id>/<model>" for an external provider, '' when none answered.
CREATE TABLE usage_events (
    request_id         uuid PRIMARY KEY,
    at                 timestamptz NOT NULL,
    project_id         uuid NOT NULL,
    key_id             uuid,
    route              text NOT NULL,
    backend_kind       text NOT NULL CHECK (backend_kind IN ('endpoint', 'provider', 'none')),
    backend_id         text NOT NULL DEFAULT '',
    prompt_tokens      integer NOT NULL DEFAULT 0,
    completion_tokens  integer NOT NULL DEFAULT 0,
    status             integer NOT NULL,
    ttft_ms            real,
    latency_ms         real NOT NULL
);
CREATE INDEX usage_events_project_at ON usage_events (project_id, at);
CREATE INDEX usage_events_at ON usage_events (at);

-- GPU time per endpoint replica, for the realized cost of serving: a row opens when a replica is first recorded
-- and closes (stopped_at) when it stops being one. gpus and gpu_type are the replica's share of the deployment.
CREATE TABLE replica_lifetimes (
    endpoint_id  uuid NOT NULL,
    replica      text NOT NULL,
    gpus         integer NOT NULL,
    gpu_type     text NOT NULL,
    started_at   timestamptz NOT NULL,
    stopped_at   timestamptz,
    PRIMARY KEY (endpoint_id, replica, started_at)
);
CREATE INDEX replica_lifetimes_open ON replica_lifetimes (endpoint_id) WHERE stopped_at IS NULL;
