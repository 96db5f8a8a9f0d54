-- The claim and the other statements of outbox-relay with 100,000 published rows kept (docs/relay.md,
-- "Measured"). Run it on a scratch database made by bin/migrate up: it empties the outbox.
\set ON_ERROR_STOP on
-- 1,000 rows waiting to be published.
INSERT INTO outbox (event_id, aggregate_id, event_type, version, subject, headers, payload, schema_version)
SELECT gen_random_uuid(), g, 'user_updated', 3, 'user.events.updated',
       '{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}',
       user_event_payload(g, 'User ' || g, 'u' || g || '@example.com', 3, now(), false), 2
FROM generate_series(1, 1000) g;
VACUUM ANALYZE outbox;
\echo === today (published rows deleted): the claim of today over the 1,000 waiting rows alone
BEGIN;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, event_id::text, subject, headers->>'traceparent',
       json_build_object('type', event_type, 'event_id', event_id, 'schema_version', schema_version,
                         'occurred_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                         'payload', payload)::text
FROM outbox ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED;
ROLLBACK;
-- Then 100,000 published rows kept (as after 5 minutes at 333 events/s), and the 1,000 waiting
-- rows again behind them.
TRUNCATE outbox;
INSERT INTO outbox (event_id, aggregate_id, event_type, version, subject, headers, payload,
                    schema_version, published_seq, published_at)
SELECT gen_random_uuid(), g, 'user_updated', 2, 'user.events.updated',
       '{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}',
       user_event_payload(g, 'User ' || g, 'u' || g || '@example.com', 2, now(), false), 2,
       g, now() - interval '1 minute'
FROM generate_series(1, 100000) g;
INSERT INTO outbox (event_id, aggregate_id, event_type, version, subject, headers, payload, schema_version)
SELECT gen_random_uuid(), g, 'user_updated', 3, 'user.events.updated',
       '{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}',
       user_event_payload(g, 'User ' || g, 'u' || g || '@example.com', 3, now(), false), 2
FROM generate_series(1, 1000) g;
VACUUM ANALYZE outbox;
\echo === after: the claim (outbox-relay/batch.c CLAIM_SQL), index of waiting rows
BEGIN;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, event_id::text, subject, headers->>'traceparent',
       json_build_object('type', event_type, 'event_id', event_id, 'schema_version', schema_version,
                         'occurred_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                         'payload', payload)::text
FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED;
ROLLBACK;
\echo === before: the same claim without the index of waiting rows (dropped in a rolled-back transaction)
BEGIN;
DROP INDEX outbox_pending_id;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, event_id::text, subject, headers->>'traceparent',
       json_build_object('type', event_type, 'event_id', event_id, 'schema_version', schema_version,
                         'occurred_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                         'payload', payload)::text
FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED;
ROLLBACK;
\echo === the gauges (outbox-relay/retained.c measure_sql) with 100,000 kept
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL),
       COALESCE(extract(epoch FROM clock_timestamp() - (SELECT created_at FROM outbox
           WHERE published_at IS NULL ORDER BY id LIMIT 1)), 0),
       (SELECT count(*) FROM outbox WHERE published_at IS NOT NULL),
       COALESCE(extract(epoch FROM clock_timestamp() - (SELECT min(published_at) FROM outbox
           WHERE published_at IS NOT NULL)), 0);
\echo === one sweep of 1000 (outbox-relay/retained.c sweep_sql; RELAY_RETAIN 30s)
INSERT INTO outbox_stream VALUES ('USER_EVENTS', 0, 1, 100000, now());
BEGIN;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published_at < LEAST(
    statement_timestamp() - make_interval(secs => 30000 / 1000.0),
    COALESCE((SELECT checked_at FROM outbox_stream WHERE stream = 'USER_EVENTS'), '-infinity'))
    ORDER BY published_at LIMIT 1000 FOR UPDATE SKIP LOCKED);
ROLLBACK;
\echo === a restore of the 1,000 newest kept rows (a stream that went back by 1,000)
BEGIN;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
UPDATE outbox SET published_seq = NULL, published_at = NULL
WHERE published_at IS NOT NULL AND published_seq > 99000;
ROLLBACK;
