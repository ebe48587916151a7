-- A route's fallbacks are tried in the order they were given: one position per fallback, counted across its
-- endpoint and provider fallbacks together (0 first); primaries have none.
ALTER TABLE route_backends ADD COLUMN fallback_position integer CHECK (fallback_position >= 0);
ALTER TABLE route_provider_backends ADD COLUMN fallback_position integer CHECK (fallback_position >= 0);

-- Fallbacks written before positions existed keep the order the gateway used for them: endpoints by id, then
-- provider models by provider id and model.
WITH ordered AS (
    SELECT route_name, 0 AS kind, endpoint_id AS provider_or_endpoint, '' AS model
    FROM route_backends WHERE fallback
    UNION ALL
    SELECT route_name, 1, provider_id, model FROM route_provider_backends WHERE fallback
), numbered AS (
    SELECT route_name, kind, provider_or_endpoint, model,
           (row_number() OVER (PARTITION BY route_name ORDER BY kind, provider_or_endpoint, model) - 1)::integer
               AS position
    FROM ordered
)
UPDATE route_backends b SET fallback_position = n.position
FROM numbered n WHERE n.kind = 0 AND b.route_name = n.route_name AND b.endpoint_id = n.provider_or_endpoint;

WITH ordered AS (
    SELECT route_name, 0 AS kind, endpoint_id AS provider_or_endpoint, '' AS model
    FROM route_backends WHERE fallback
    UNION ALL
    SELECT route_name, 1, provider_id, model FROM route_provider_backends WHERE fallback
), numbered AS (
    SELECT route_name, kind, provider_or_endpoint, model,
           (row_number() OVER (PARTITION BY route_name ORDER BY kind, provider_or_endpoint, model) - 1)::integer
               AS position
    FROM ordered
)
UPDATE route_provider_backends p SET fallback_position = n.position
FROM numbered n WHERE n.kind = 1 AND p.route_name = n.route_name AND p.provider_id = n.provider_or_endpoint
                  AND p.model = n.model;

-- A fallback has a position and a primary has none.
ALTER TABLE route_backends ADD CONSTRAINT route_backends_fallback_position
    CHECK (fallback = (fallback_position IS NOT NULL));
ALTER TABLE route_provider_backends ADD CONSTRAINT route_provider_backends_fallback_position
    CHECK (fallback = (fallback_position IS NOT NULL));
