-- API tokens get a role (admin, member, read-only) in place of is_admin, an optional expiry, and revocation.
ALTER TABLE api_tokens ADD COLUMN role text NOT NULL DEFAULT 'member'
    CHECK (role IN ('admin', 'member', 'read-only'));
UPDATE api_tokens SET role = 'admin' WHERE is_admin;
ALTER TABLE api_tokens DROP COLUMN is_admin;
ALTER TABLE api_tokens ADD COLUMN expires_at timestamptz;
ALTER TABLE api_tokens ADD COLUMN revoked_at timestamptz;
CREATE INDEX api_tokens_project ON api_tokens (project_id, created_at);
