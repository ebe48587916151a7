-- The seed's Stage 4 autoscaling block per endpoint, and the autoscaler's last decision (shown by GET).
ALTER TABLE endpoints ADD COLUMN autoscaling jsonb;
ALTER TABLE endpoints ADD COLUMN autoscaling_state jsonb;
