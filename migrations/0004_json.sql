-- How users and their events look as JSON (jsonb: its key order, shortest first, happens to be
-- id, name, email, version, created_at, updated_at), defined once so that every statement (and the
-- idempotency replay) renders them identically. Timestamps are RFC 3339 in UTC.
CREATE FUNCTION rfc3339(ts timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');

CREATE FUNCTION user_json(id bigint, name text, email text, version bigint,
                          created_at timestamptz, updated_at timestamptz) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN jsonb_build_object('id', id, 'name', name, 'email', email, 'version', version,
                             'created_at', rfc3339(created_at), 'updated_at', rfc3339(updated_at));

-- The full state an event carries, so that any single event can rebuild the copy.
CREATE FUNCTION user_event_payload(id bigint, name text, email text, version bigint,
                                   updated_at timestamptz, deleted boolean) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN deleted
        THEN jsonb_build_object('id', id, 'name', name, 'email', email, 'version', version,
                                'updated_at', rfc3339(updated_at), 'deleted', true)
        ELSE jsonb_build_object('id', id, 'name', name, 'email', email, 'version', version,
                                'updated_at', rfc3339(updated_at))
    END;
