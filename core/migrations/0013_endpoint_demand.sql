-- When a request last arrived for each endpoint, as the gateway saw it (served, or waiting for a replica to wake).
-- The gateway writes it at most once a second per endpoint; the autoscaler reads it to scale an idle endpoint to
-- zero and to wake one at zero replicas.
CREATE TABLE endpoint_demand (
    endpoint_id uuid PRIMARY KEY REFERENCES endpoints (id) ON DELETE CASCADE,
    last_request_at timestamptz NOT NULL
);
