-- Endpoints: intent (model, cluster, config) written by the API; progress and outcome written by the workflows.
CREATE TABLE endpoints (
    id                       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id               uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name                     text NOT NULL UNIQUE,  -- also the model name clients send to the gateway
    model_id                 uuid NOT NULL REFERENCES models(id),
    cluster_id               uuid NOT NULL REFERENCES clusters(id),
    status                   text NOT NULL DEFAULT 'PENDING',
    step                     text,
    runtime                  text NOT NULL DEFAULT 'vllm',
    optimization_method      text,
    performance_targets      jsonb NOT NULL DEFAULT '{}'::jsonb,
    config                   jsonb,
    replicas                 integer NOT NULL DEFAULT 1,
    resources                jsonb,
    recommendation           jsonb,
    optimization_status      text,
    optimization_workflow_id text,
    workflow_id              text,
    inference_url            text,
    error                    jsonb,
    keep_on_failure          boolean NOT NULL DEFAULT false,
    health                   jsonb,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);

-- GPUs held by an endpoint on a cluster; free = the cluster's inventory minus the sum held.
CREATE TABLE gpu_reservations (
    cluster_id   uuid NOT NULL REFERENCES clusters(id) ON DELETE CASCADE,
    endpoint_id  uuid NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    gpu_type     text NOT NULL,
    count        integer NOT NULL CHECK (count > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster_id, endpoint_id)
);

-- The replicas an endpoint serves from right now (the gateway routes to the ready ones).
CREATE TABLE endpoint_replicas (
    endpoint_id  uuid NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    name         text NOT NULL,
    url          text NOT NULL,
    ready        boolean NOT NULL DEFAULT false,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint_id, name)
);

-- Routes: a model name clients use, spread over endpoints by weight (blue-green and A/B change the weights).
CREATE TABLE routes (
    name        text PRIMARY KEY,
    project_id  uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE route_backends (
    route_name   text NOT NULL REFERENCES routes(name) ON DELETE CASCADE,
    endpoint_id  uuid NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    weight       integer NOT NULL CHECK (weight >= 0 AND weight <= 100),
    PRIMARY KEY (route_name, endpoint_id)
);
