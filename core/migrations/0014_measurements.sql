-- Measured performance of one serving config under one workload: what a benchmark run, a production window or an
-- imported file saw. Rows are never changed after they are written; each belongs to one project.
CREATE TABLE measurements (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq                    bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- the order rows were written in
    project_id             uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    model_id               uuid REFERENCES models(id) ON DELETE SET NULL,
    model_name             text NOT NULL,
    architecture           text,
    parameter_count        bigint CHECK (parameter_count > 0),
    gpu_type               text NOT NULL,
    runtime                text NOT NULL,
    runtime_version        text,
    precision              text,
    quantization           text,
    tp                     integer NOT NULL CHECK (tp BETWEEN 1 AND 64),
    pp                     integer NOT NULL CHECK (pp BETWEEN 1 AND 64),
    max_num_seqs           integer CHECK (max_num_seqs > 0),
    max_num_batched_tokens integer CHECK (max_num_batched_tokens > 0),
    input_tokens           integer NOT NULL CHECK (input_tokens > 0),
    output_tokens          integer NOT NULL CHECK (output_tokens > 0),
    concurrency            integer NOT NULL CHECK (concurrency > 0),
    ttft_p50_ms            double precision NOT NULL CHECK (ttft_p50_ms >= 0),
    ttft_p99_ms            double precision CHECK (ttft_p99_ms >= 0),
    tpot_p50_ms            double precision NOT NULL CHECK (tpot_p50_ms >= 0),
    tpot_p99_ms            double precision CHECK (tpot_p99_ms >= 0),
    throughput_tps         double precision CHECK (throughput_tps >= 0),
    request_count          integer CHECK (request_count >= 0),
    source_kind            text NOT NULL CHECK (source_kind IN ('benchmark', 'production', 'import')),
    source_id              text,
    window_start           timestamptz,
    window_end             timestamptz,
    -- Idempotency within a project: a benchmark level recorded twice (a retried activity) stays one row.
    source_key             text,
    created_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX measurements_project ON measurements (project_id, seq);
CREATE INDEX measurements_lookup ON measurements (project_id, model_id, gpu_type, runtime);
CREATE UNIQUE INDEX measurements_source_key ON measurements (project_id, source_key) WHERE source_key IS NOT NULL;

-- A benchmark of a RUNNING endpoint through the gateway: the requested sweep, each level's result as it finishes,
-- and the run's status.
CREATE TABLE benchmark_runs (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id   uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    endpoint_id  uuid NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    request      jsonb NOT NULL,
    status       text NOT NULL CHECK (status IN ('PENDING', 'RUNNING', 'COMPLETED', 'FAILED')),
    step         text,
    levels       jsonb NOT NULL DEFAULT '[]'::jsonb,
    error        text,
    workflow_id  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX benchmark_runs_endpoint ON benchmark_runs (endpoint_id, created_at, id);
