-- Where each model ran, refreshed with cost_ms_per_row after each query that ran it: node ->
-- {"replicas": live replicas there, "rows", "batches", "ms_per_row", "device"}. On a Ray cluster
-- one entry per node ("10.0.0.5/1a2b3c4d": address and the start of Ray's node id); the local
-- pool writes one entry, "local", whose replicas are its worker processes.
ALTER TABLE sieve.models ADD COLUMN IF NOT EXISTS replicas jsonb NOT NULL DEFAULT '{}'::jsonb;
