-- The route table's version: one number, bumped by the commit of every transaction that changes what the gateway's
-- route query reads (routes, their endpoint and provider backends, replica readiness and addresses, providers,
-- endpoint names), and announced to the gateways with NOTIFY bud_routes '<version>'. A gateway reads it in the same
-- snapshot as the routes, so "serves version N" means it serves every change committed up to N.
CREATE TABLE route_table_version (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version    bigint NOT NULL
);
INSERT INTO route_table_version (singleton, version) VALUES (true, 1);

-- Fired at commit (the triggers below are deferred), so the version row is the last lock a writer takes and two
-- writers never wait on each other through it; a transaction bumps it once however many rows it changed.
CREATE FUNCTION bump_route_table_version() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bumped bigint;
BEGIN
    IF current_setting('bud.route_table_bumped', true) = 'yes' THEN
        RETURN NULL;
    END IF;
    UPDATE route_table_version SET version = version + 1 WHERE singleton RETURNING version INTO bumped;
    PERFORM set_config('bud.route_table_bumped', 'yes', true);
    PERFORM pg_notify('bud_routes', bumped::text);
    RETURN NULL;
END;
$$;

-- TRUNCATE has no rows to defer on: it bumps at once.
CREATE FUNCTION bump_route_table_version_now() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bumped bigint;
BEGIN
    UPDATE route_table_version SET version = version + 1 WHERE singleton RETURNING version INTO bumped;
    PERFORM pg_notify('bud_routes', bumped::text);
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER routes_version_rows AFTER INSERT OR DELETE ON routes
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_route_table_version();
CREATE CONSTRAINT TRIGGER routes_version_update AFTER UPDATE ON routes DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (ROW(OLD.name, OLD.project_id, OLD.spill_queue_depth) IS DISTINCT FROM
          ROW(NEW.name, NEW.project_id, NEW.spill_queue_depth))
    EXECUTE FUNCTION bump_route_table_version();

CREATE CONSTRAINT TRIGGER route_backends_version AFTER INSERT OR UPDATE OR DELETE ON route_backends
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_route_table_version();

CREATE CONSTRAINT TRIGGER route_provider_backends_version AFTER INSERT OR UPDATE OR DELETE ON route_provider_backends
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_route_table_version();

CREATE CONSTRAINT TRIGGER endpoint_replicas_version_rows AFTER INSERT OR DELETE ON endpoint_replicas
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_route_table_version();
CREATE CONSTRAINT TRIGGER endpoint_replicas_version_update AFTER UPDATE ON endpoint_replicas
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (ROW(OLD.endpoint_id, OLD.name, OLD.url, OLD.ready) IS DISTINCT FROM
          ROW(NEW.endpoint_id, NEW.name, NEW.url, NEW.ready))
    EXECUTE FUNCTION bump_route_table_version();

CREATE CONSTRAINT TRIGGER providers_version_rows AFTER INSERT OR DELETE ON providers
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_route_table_version();
CREATE CONSTRAINT TRIGGER providers_version_update AFTER UPDATE ON providers DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (ROW(OLD.id, OLD.project_id, OLD.name, OLD.base_url, OLD.api_key_sealed) IS DISTINCT FROM
          ROW(NEW.id, NEW.project_id, NEW.name, NEW.base_url, NEW.api_key_sealed))
    EXECUTE FUNCTION bump_route_table_version();

-- The served model name comes from the endpoint's name.
CREATE CONSTRAINT TRIGGER endpoints_version_update AFTER UPDATE ON endpoints DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name)
    EXECUTE FUNCTION bump_route_table_version();

CREATE TRIGGER routes_version_truncate AFTER TRUNCATE ON routes
    FOR EACH STATEMENT EXECUTE FUNCTION bump_route_table_version_now();
CREATE TRIGGER route_backends_version_truncate AFTER TRUNCATE ON route_backends
    FOR EACH STATEMENT EXECUTE FUNCTION bump_route_table_version_now();
CREATE TRIGGER route_provider_backends_version_truncate AFTER TRUNCATE ON route_provider_backends
    FOR EACH STATEMENT EXECUTE FUNCTION bump_route_table_version_now();
CREATE TRIGGER endpoint_replicas_version_truncate AFTER TRUNCATE ON endpoint_replicas
    FOR EACH STATEMENT EXECUTE FUNCTION bump_route_table_version_now();
CREATE TRIGGER providers_version_truncate AFTER TRUNCATE ON providers
    FOR EACH STATEMENT EXECUTE FUNCTION bump_route_table_version_now();

-- Every running gateway, heartbeating about once a second the route-table version it serves. A publish waits until
-- every gateway seen in the last few seconds serves at least the version it committed.
CREATE TABLE gateway_instances (
    instance_id          text PRIMARY KEY,
    url                  text NOT NULL DEFAULT '',
    route_table_version  bigint NOT NULL,
    started_at           timestamptz NOT NULL DEFAULT now(),
    last_seen            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gateway_instances_last_seen ON gateway_instances (last_seen);
