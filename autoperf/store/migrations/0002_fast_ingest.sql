-- autoperf store, version 2: cheaper ingest (about 4x less PostgreSQL CPU per record).
-- autoperf: rewrites performance_metrics
--   (the sink applies this migration by itself only while the table is empty; on a store with rows,
--   run `autoperf db init` once: it rewrites every partition, time proportional to the store size)
--
-- * `record` becomes `text`: stored as the JSON text the sink sends, neither parsed into jsonb (the
--   largest cost of version 1) nor syntax-checked as json (a quarter of what is left). Query it as
--   `record::jsonb`; the typed columns hold what is queried often. `metadata` (only flow_complete
--   records carry one) stays jsonb.
-- * The primary key becomes (timestamp, id): same uniqueness (idempotent replays), and the one btree
--   now also serves time ranges, ORDER BY timestamp and max(timestamp). Inserts are append-like.
-- * The secondary indexes go: nothing autoperf runs needs them and each costs ~2-3 us per record.
--   Add your own when you query by flow or operation a lot, e.g.
--   CREATE INDEX ON performance_metrics (flow_name, timestamp);

DROP INDEX IF EXISTS performance_metrics_flow_ts_idx;
DROP INDEX IF EXISTS performance_metrics_op_ts_idx;
DROP INDEX IF EXISTS performance_metrics_duration_idx;

ALTER TABLE performance_metrics DROP CONSTRAINT IF EXISTS performance_metrics_pkey;
ALTER TABLE performance_metrics ALTER COLUMN record TYPE text USING record::text;
ALTER TABLE performance_metrics ADD CONSTRAINT performance_metrics_pkey PRIMARY KEY (timestamp, id);
