-- Stage 5: the endpoint's last observation (live metrics, alerts, actual vs predicted) and re-optimization advice.
ALTER TABLE endpoints ADD COLUMN monitoring jsonb;
