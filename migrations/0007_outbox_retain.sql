-- Published rows are kept for a while (RELAY_RETAIN) instead of being deleted on the PubAck:
-- JetStream acknowledges before it syncs to disk, and an operator can purge, delete or roll back
-- the stream, so the relay keeps what it published until it is safe, watches the stream, and
-- publishes again what the stream lost (docs/relay.md, "Retention and the stream watch").
--
-- A row is waiting while published_at is NULL; once JetStream acknowledged it, the relay records
-- the stream sequence of the PubAck and when. Both are set together, and both are set back to NULL
-- when the row has to be published again.
ALTER TABLE outbox
    ADD COLUMN published_seq bigint,
    ADD COLUMN published_at  timestamptz,
    ADD CONSTRAINT outbox_published_both CHECK ((published_seq IS NULL) = (published_at IS NULL));

-- The claim (ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED over the waiting rows) reads this index,
-- which holds the waiting rows only: it costs the same with 100 or 100,000 published rows kept.
CREATE INDEX outbox_pending_id ON outbox (id) WHERE published_at IS NULL;
-- The sweep (oldest first) and the age of the oldest kept row.
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;
-- A restore selects kept rows by stream sequence (above the stream's last, below its first).
CREATE INDEX outbox_published_seq ON outbox (published_seq) WHERE published_at IS NOT NULL;

-- The rows still to be published: what "the outbox" meant when published rows were deleted.
-- Readers that wait for the outbox to drain count this view.
CREATE VIEW outbox_pending AS SELECT * FROM outbox WHERE published_at IS NULL;

-- What the relay last saw of a stream, so that a relay that starts (or takes over) can tell a
-- stream that was created anew, or that lost its tail, from one it has never seen: written by the
-- leader at every check of the stream. checked_at also bounds the sweep: a row is deleted only
-- once the stream was seen, after the row was published, still holding everything acknowledged.
CREATE TABLE outbox_stream (
    stream      text        PRIMARY KEY,
    created_ns  bigint      NOT NULL,   -- the stream's creation time, ns since the epoch
    first_seq   bigint      NOT NULL,   -- its first sequence then (1 for an empty new stream)
    high_seq    bigint      NOT NULL,   -- the highest sequence acknowledged to the relay
    checked_at  timestamptz NOT NULL
);
