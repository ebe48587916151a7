-- The last traffic shift of a route (status, step, SLO readings, reason), shown by GET /api/routes/{name}.
ALTER TABLE routes ADD COLUMN shift jsonb;
