-- The JSON functions of 0004 were declared IMMUTABLE, but they call to_char and
-- jsonb_build_object, which are only STABLE; PostgreSQL then refuses to inline them and parses
-- their bodies again on every call, which the write path's profile showed on top (pg_strtok,
-- nodeRead). Declared STABLE, as their contents are, they are inlined into each statement.
ALTER FUNCTION rfc3339(timestamptz) STABLE;
ALTER FUNCTION user_json(bigint, text, text, bigint, timestamptz, timestamptz) STABLE;
ALTER FUNCTION user_event_payload(bigint, text, text, bigint, timestamptz, boolean) STABLE;
