-- Projects own everything a user creates; bearer tokens belong to one project and are stored hashed.
CREATE TABLE projects (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id    uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name          text NOT NULL,
    token_sha256  text NOT NULL UNIQUE,
    is_admin      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz
);

-- A cluster with project_id NULL is platform-wide (the local cluster) and visible to every project.
CREATE TABLE clusters (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id   uuid REFERENCES projects(id) ON DELETE CASCADE,
    name         text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('local', 'kubernetes')),
    gpus         jsonb NOT NULL,
    kubeconfig   text,
    status       text NOT NULL DEFAULT 'REGISTERING',
    facts        jsonb NOT NULL DEFAULT '{}'::jsonb,
    error        text,
    workflow_id  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (project_id, name)
);
