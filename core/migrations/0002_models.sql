-- The model registry: declared facts from the request, derived facts and the scan report from RegisterModel.
CREATE TABLE models (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id           uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name                 text NOT NULL,
    version              text NOT NULL,
    architecture         text NOT NULL,
    parameter_count      bigint NOT NULL,
    context_length       integer NOT NULL,
    source_path          text NOT NULL,
    bucket               text NOT NULL,
    prefix               text NOT NULL,
    license              text,
    license_category     text,
    status               text NOT NULL DEFAULT 'SCANNING',
    facts                jsonb,
    real_parameter_count bigint,
    scan_report          jsonb,
    quarantine_prefix    text,
    error                text,
    workflow_id          text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, name, version)
);
CREATE INDEX models_project_created ON models (project_id, created_at, id);

-- One row per file of a model: the checksums later stages verify copies against.
CREATE TABLE model_files (
    model_id   uuid NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    path       text NOT NULL,          -- relative to the model's prefix
    size       bigint NOT NULL,
    sha256     text,
    PRIMARY KEY (model_id, path)
);

-- Quality scores a user attaches (mmlu 68.4) and serving performance measured by later stages.
CREATE TABLE model_benchmarks (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    model_id    uuid NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('quality', 'performance')),
    name        text NOT NULL,
    score       double precision NOT NULL,
    unit        text,
    gpu_type    text,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    source      text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_benchmarks_lookup ON model_benchmarks (model_id, name);
