-- What an endpoint's replicas run, apart from the configuration a PUT /config stored for the next deploy:
-- `deployed` is the serving generation ({generation, spec: the DeploymentSpec its release runs, runtime, config,
-- resources, replicas as configured}), `previous_deployed` the one a rolling update replaced (what revert goes back
-- to), and `rollout` the plan and progress of the last rolling update.
ALTER TABLE endpoints ADD COLUMN deployed jsonb;
ALTER TABLE endpoints ADD COLUMN previous_deployed jsonb;
ALTER TABLE endpoints ADD COLUMN rollout jsonb;
