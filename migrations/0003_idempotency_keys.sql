-- Idempotency keys of POST /users: a retry with the same key and body gets the stored response
-- and writes nothing; the same key with another body is refused.
CREATE TABLE idempotency_keys (
    key            text        PRIMARY KEY,
    fingerprint    text        NOT NULL,
    status         integer     NOT NULL,
    response_body  text        NOT NULL,
    user_id        bigint,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at     timestamptz NOT NULL
);

CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);
