-- External OpenAI-compatible providers a route may send traffic to; the API key is sealed (core.secrets).
CREATE TABLE providers (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id             uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name                   text NOT NULL,
    kind                   text NOT NULL CHECK (kind = 'openai-compatible'),
    base_url               text NOT NULL,
    api_key_sealed         text NOT NULL,
    models                 text[] NOT NULL,
    price_input_per_mtok   double precision NOT NULL,
    price_output_per_mtok  double precision NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, name)
);

-- A route's provider backends beside its endpoint backends; fallback ones take traffic only when the primaries
-- cannot (spillover), and then carry no weight share of the primaries' 100.
CREATE TABLE route_provider_backends (
    route_name   text NOT NULL REFERENCES routes(name) ON DELETE CASCADE,
    provider_id  uuid NOT NULL REFERENCES providers(id) ON DELETE CASCADE,
    model        text NOT NULL,
    weight       integer NOT NULL CHECK (weight >= 0 AND weight <= 100),
    fallback     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (route_name, provider_id, model)
);
ALTER TABLE route_backends ADD COLUMN fallback boolean NOT NULL DEFAULT false;
-- Spill to the fallbacks when the primaries' replicas report a queue deeper than this (NULL = not on queue depth).
ALTER TABLE routes ADD COLUMN spill_queue_depth integer CHECK (spill_queue_depth >= 0);
