-- Ready replicas as the backend reported them (a Kubernetes Service is one route target for many pods).
ALTER TABLE endpoints ADD COLUMN ready_replicas integer NOT NULL DEFAULT 0;
