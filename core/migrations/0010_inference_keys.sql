-- Inference API keys: what clients send to the gateway (stored as a SHA-256 digest; the prefix names it in lists).
-- routes NULL = every route of the project; rpm/tpm NULL = no per-key limit.
CREATE TABLE inference_keys (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id    uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name          text NOT NULL,
    prefix        text NOT NULL UNIQUE,
    digest        text NOT NULL UNIQUE,
    routes        text[],
    rpm           integer CHECK (rpm > 0),
    tpm           integer CHECK (tpm > 0),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz
);
CREATE INDEX inference_keys_updated ON inference_keys (updated_at);
CREATE INDEX inference_keys_project ON inference_keys (project_id, created_at);

-- A monthly token quota per project (NULL = none); updated_at tells the gateway a quota changed.
ALTER TABLE projects ADD COLUMN monthly_token_quota bigint CHECK (monthly_token_quota > 0);
ALTER TABLE projects ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
