-- Optimization runs (budsim): the request, the result (Pareto set, recommendation, rejections) and their workflow.
CREATE TABLE optimizations (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id   uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    endpoint_id  uuid REFERENCES endpoints(id) ON DELETE CASCADE,
    model_id     uuid NOT NULL REFERENCES models(id),
    cluster_id   uuid NOT NULL REFERENCES clusters(id),
    request      jsonb NOT NULL,
    status       text NOT NULL DEFAULT 'RUNNING',
    result       jsonb,
    error        text,
    workflow_id  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
