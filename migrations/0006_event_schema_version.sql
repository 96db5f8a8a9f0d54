-- Every outbox row says which schema version its payload was written in, and the relay puts that
-- version into the envelope, so an upgrade never mislabels the rows written before it (they keep
-- 1). Version 2 (common/event_contract.h, docs/events.md): "deleted" is always in the payload,
-- true or false. Producers pass the version they write; the default is only for old writers.
ALTER TABLE outbox ADD COLUMN schema_version smallint NOT NULL DEFAULT 1;
ALTER TABLE outbox_dead ADD COLUMN schema_version smallint NOT NULL DEFAULT 1;

CREATE OR REPLACE FUNCTION user_event_payload(id bigint, name text, email text, version bigint,
                                              updated_at timestamptz, deleted boolean) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN jsonb_build_object('id', id, 'name', name, 'email', email, 'version', version,
                              'updated_at', rfc3339(updated_at), 'deleted', deleted);
