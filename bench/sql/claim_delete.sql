BEGIN;
SELECT id, event_id::text, subject, headers->>'traceparent', json_build_object('type', event_type, 'event_id', event_id, 'schema_version', 1, 'occurred_at', to_char(created_at AT TIME ZONE 'UTC', :fmt::text), 'payload', payload)::text FROM outbox ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED;
DELETE FROM outbox WHERE id = ANY (ARRAY(SELECT id FROM outbox ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED));
COMMIT;
