-- autoperf store, version 1: raw records (partitioned by UTC day) + daily statistics.

CREATE TABLE IF NOT EXISTS performance_metrics (
    id              text             NOT NULL,   -- span_id, the record's "id", or blake2b-128 of the canonical record
    timestamp       timestamptz      NOT NULL,
    type            text,
    level           text,
    flow_name       text,
    operation_name  text,
    kind            text,
    duration_ms     double precision,
    user_id         bigint,
    status          text,
    flow_id         text,
    parent_id       text,
    pid             integer,
    metadata        jsonb,
    record          jsonb            NOT NULL,
    PRIMARY KEY (id, timestamp)
) PARTITION BY RANGE (timestamp);

CREATE INDEX IF NOT EXISTS performance_metrics_flow_ts_idx ON performance_metrics (flow_name, timestamp);
CREATE INDEX IF NOT EXISTS performance_metrics_op_ts_idx ON performance_metrics (operation_name, timestamp);
CREATE INDEX IF NOT EXISTS performance_metrics_duration_idx ON performance_metrics (duration_ms);

-- One partition per UTC day, created on demand by the sink / CLI (safe to call concurrently).
CREATE OR REPLACE FUNCTION autoperf_ensure_partition(day date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    part text := 'performance_metrics_p' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass(part) IS NULL THEN
        BEGIN
            EXECUTE format(
                'CREATE TABLE IF NOT EXISTS %I PARTITION OF performance_metrics FOR VALUES FROM (%L) TO (%L)',
                part,
                to_char(day, 'YYYY-MM-DD') || ' 00:00:00+00',
                to_char(day + 1, 'YYYY-MM-DD') || ' 00:00:00+00');
        EXCEPTION WHEN duplicate_table OR unique_violation OR duplicate_object THEN
            NULL;  -- another session created it at the same moment
        END;
    END IF;
    RETURN part;
END
$$;

CREATE TABLE IF NOT EXISTS performance_stats (
    id               bigserial        PRIMARY KEY,
    date             date             NOT NULL,
    flow_name        text             NOT NULL,   -- '' when the span belongs to no named flow
    operation_name   text             NOT NULL,
    count            bigint           NOT NULL,
    avg_duration_ms  double precision NOT NULL,
    min_duration_ms  double precision NOT NULL,
    max_duration_ms  double precision NOT NULL,
    p50_duration_ms  double precision NOT NULL,
    p95_duration_ms  double precision NOT NULL,
    p99_duration_ms  double precision NOT NULL,
    computed_at      timestamptz      NOT NULL DEFAULT now(),
    UNIQUE (date, flow_name, operation_name)
);
