-- Outbox: one row per change, written in the same transaction as the users row. The relay
-- publishes rows in id order and deletes them once JetStream acknowledged them.
CREATE TABLE outbox (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      uuid        NOT NULL UNIQUE,
    aggregate_id  bigint      NOT NULL,
    event_type    text        NOT NULL,
    version       bigint      NOT NULL,
    subject       text        NOT NULL,
    headers       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    payload       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Rows that can never be published (larger than the server accepts) move here, with the reason,
-- so that they never block the rows behind them.
CREATE TABLE outbox_dead (
    id            bigint      PRIMARY KEY,
    event_id      uuid        NOT NULL UNIQUE,
    aggregate_id  bigint      NOT NULL,
    event_type    text        NOT NULL,
    version       bigint      NOT NULL,
    subject       text        NOT NULL,
    headers       jsonb       NOT NULL,
    payload       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL,
    reason        text        NOT NULL,
    dead_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
