BEGIN;
SELECT id, event_id::text, subject, headers->>'traceparent', json_build_object('type', event_type, 'event_id', event_id, 'schema_version', schema_version, 'occurred_at', to_char(created_at AT TIME ZONE 'UTC', :fmt::text), 'payload', payload)::text FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED;
UPDATE outbox SET published_seq = id, published_at = statement_timestamp() WHERE id = ANY (ARRAY(SELECT id FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED));
COMMIT;
