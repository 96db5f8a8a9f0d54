-- Least privilege: the schema belongs to an owner role, and each process logs in as a role of its
-- own that may run its own statements and nothing else. None of these roles is a superuser or may
-- create roles or databases (or replicate, or bypass row security).
--
--   user_sync_owner  owns every table, view, sequence and function of the schema. bin/migrate logs
--                    in as it, so the objects of later migrations are its own too.
--   user_sync_api    user-api (user-api/user_store.c): reads, creates, updates and deletes users
--                    (only name, email, version and updated_at are written), appends to the
--                    outbox, reads, writes and expires idempotency keys.
--   user_sync_relay  outbox-relay (batch.c, retained.c): claims, marks published (published_seq
--                    and published_at only), republishes and deletes outbox rows, moves rows to
--                    outbox_dead, keeps outbox_stream; `outbox-relay snapshot` through
--                    outbox_snapshot_users(). It reads no users. Its leader lock is an advisory
--                    lock, which every role may take.
--   user_sync_audit  audit (auditor/users.c): reads the id and version of users, nothing else (no
--                    name or email); --repair through audit_repair_snapshot() and
--                    audit_repair_delete().
-- The identity columns' sequences need no grant: an INSERT draws from them without a check.
--
-- Roles belong to the cluster, not to a database: each is created only when it is missing (a
-- concurrent run in another database may create it first), so this file runs in every database of a
-- cluster. Creating a role takes a superuser or CREATEROLE: on a cluster without the roles, run
-- `bin/migrate up` once as a superuser (which also hands the tables of a database migrated before
-- this file, owned by that superuser, to user_sync_owner), then as user_sync_owner from there on.
-- deploy/infra.sh creates the roles itself, with passwords, and runs migrate as user_sync_owner.
-- The roles get no password here (a migration holds no secret): set one with ALTER ROLE ...
-- PASSWORD, or let pg_hba.conf authenticate them another way (certificate, peer).
--
-- Privileges are granted explicitly, here and in every later migration that adds a table or a
-- statement, not through ALTER DEFAULT PRIVILEGES: a new table is out of every service's reach until
-- a migration says which service may do what with it, next to the statement that needs it.
--
-- Reading rows FOR SHARE takes the UPDATE privilege. The relay's snapshot and the auditor's repair
-- lock users FOR SHARE (so that a concurrent update's own event is ordered after theirs), but
-- neither may change a user: their statements are the functions below, which run as
-- user_sync_owner (SECURITY DEFINER) and can only write users' current state to the outbox.

DO $$
DECLARE
    wanted CONSTANT text[] := ARRAY['user_sync_owner', 'user_sync_api', 'user_sync_relay',
                                    'user_sync_audit'];
    r text;
BEGIN
    FOREACH r IN ARRAY wanted LOOP
        CONTINUE WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = r);
        BEGIN
            EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                           'NOREPLICATION NOBYPASSRLS', r);
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by the same migration in another database
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role "%" does not exist, and "%" may not create it', r, current_user
                    USING HINT = 'run bin/migrate up once as a superuser, or create the roles first '
                                 '(deploy/infra.sh does)';
        END;
    END LOOP;
    SELECT rolname INTO r FROM pg_roles WHERE rolname = ANY (wanted)
        AND (rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'role "%" is a superuser or may create roles or databases, replicate or '
                        'bypass row security: the roles of this schema must not', r
            USING HINT = format('ALTER ROLE %I NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
                                'NOBYPASSRLS', r);
    END IF;
    -- A database migrated before this file belongs to whoever ran migrate then, usually the
    -- superuser; only a superuser can hand its tables over.
    SELECT c.relname INTO r FROM unnest(ARRAY['users', 'outbox', 'outbox_dead', 'idempotency_keys',
                                              'outbox_stream', 'schema_migrations']) AS t (name)
        JOIN pg_class c ON c.oid = to_regclass(t.name)
        WHERE c.relowner <> 'user_sync_owner'::regrole LIMIT 1;
    IF FOUND AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'table "%" belongs to "%", and only a superuser can hand it to '
                        'user_sync_owner', r, (SELECT pg_get_userbyid(relowner) FROM pg_class
                                               WHERE oid = to_regclass(r))
            USING HINT = 'run bin/migrate up once as a superuser, then as user_sync_owner';
    END IF;
END $$;

-- The headers of an event written by the database itself (a snapshot, a repair): a new trace.
CREATE OR REPLACE FUNCTION new_trace_headers() RETURNS jsonb
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    RETURN jsonb_build_object('traceparent', '00-' || md5(random()::text) || '-' ||
                              substr(md5(random()::text), 1, 16) || '-01');

-- `outbox-relay snapshot`: the current state of up to max_users users after after_id, as
-- user_snapshot rows (type, subject and schema version from common/event_contract.h); returns how
-- many and the last user id written (after_id when none).
CREATE OR REPLACE FUNCTION outbox_snapshot_users(after_id bigint, max_users bigint, new_type text,
                                                 new_subject text, new_schema_version smallint)
    RETURNS TABLE (written bigint, last_id bigint)
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH u AS (SELECT id, name, email, version, updated_at FROM users WHERE id > after_id
               ORDER BY id LIMIT max_users FOR SHARE),
    ins AS (INSERT INTO outbox (event_id, aggregate_id, event_type, version, subject, headers,
                                payload, schema_version)
            SELECT gen_random_uuid(), id, new_type, version, new_subject,
                   new_trace_headers(),
                   user_event_payload(id, name, email, version, updated_at, false),
                   new_schema_version
              FROM u ORDER BY id RETURNING aggregate_id)
    SELECT count(*), COALESCE(max(aggregate_id), after_id) FROM ins;
END;

-- `audit --repair`, users present in PostgreSQL: a row of the current state of each of ids
-- (auditor/repair.c says why FOR SHARE), unless its current version or a later one already waits
-- in the outbox. One result row per user found: its id, version, and whether it was waiting.
CREATE OR REPLACE FUNCTION audit_repair_snapshot(ids bigint[], new_type text, new_subject text,
                                                 new_schema_version smallint)
    RETURNS TABLE (user_id bigint, user_version bigint, was_waiting boolean)
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH u AS (SELECT id, name, email, version, updated_at FROM users
               WHERE id = ANY (ids) ORDER BY id FOR SHARE),
    p AS (SELECT aggregate_id, max(version) AS version FROM outbox_pending
          WHERE aggregate_id = ANY (ids) GROUP BY aggregate_id),
    w AS (SELECT u.*, coalesce(p.version >= u.version, false) AS waiting
          FROM u LEFT JOIN p ON p.aggregate_id = u.id),
    ins AS (INSERT INTO outbox (event_id, aggregate_id, event_type, version, subject, headers,
                                payload, schema_version)
            SELECT gen_random_uuid(), id, new_type, version, new_subject,
                   new_trace_headers(),
                   user_event_payload(id, name, email, version, updated_at, false),
                   new_schema_version
              FROM w WHERE NOT waiting ORDER BY id)
    SELECT id, version, waiting FROM w ORDER BY id;
END;

-- `audit --repair`, users gone from PostgreSQL: a deletion of each of ids at the paired version
-- (the copy's + 1), without personal data, unless that version or a later one already waits in
-- the outbox. A user present after all gets nothing (no result row).
CREATE OR REPLACE FUNCTION audit_repair_delete(ids bigint[], versions bigint[], new_type text,
                                               new_subject text, new_schema_version smallint)
    RETURNS TABLE (user_id bigint, user_version bigint, was_waiting boolean)
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH d AS (SELECT * FROM unnest(ids, versions) AS d (id, version)),
    p AS (SELECT aggregate_id, max(version) AS version FROM outbox_pending
          WHERE aggregate_id = ANY (ids) GROUP BY aggregate_id),
    w AS (SELECT d.id, d.version, coalesce(p.version >= d.version, false) AS waiting
          FROM d LEFT JOIN p ON p.aggregate_id = d.id
          WHERE NOT EXISTS (SELECT 1 FROM users WHERE users.id = d.id)),
    ins AS (INSERT INTO outbox (event_id, aggregate_id, event_type, version, subject, headers,
                                payload, schema_version)
            SELECT gen_random_uuid(), id, new_type, version, new_subject,
                   new_trace_headers(),
                   user_event_payload(id, NULL, NULL, version, clock_timestamp(), true)
                       - '{name,email}'::text[],
                   new_schema_version
              FROM w WHERE NOT waiting ORDER BY id)
    SELECT id, version, waiting FROM w ORDER BY id;
END;

-- Everything of the schema so far belongs to the owner (the identity sequences and the indexes
-- follow their tables). A no-op where it already does.
ALTER TABLE users OWNER TO user_sync_owner;
ALTER TABLE outbox OWNER TO user_sync_owner;
ALTER TABLE outbox_dead OWNER TO user_sync_owner;
ALTER TABLE idempotency_keys OWNER TO user_sync_owner;
ALTER TABLE outbox_stream OWNER TO user_sync_owner;
ALTER TABLE schema_migrations OWNER TO user_sync_owner;
ALTER VIEW outbox_pending OWNER TO user_sync_owner;
ALTER FUNCTION rfc3339(timestamptz) OWNER TO user_sync_owner;
ALTER FUNCTION user_json(bigint, text, text, bigint, timestamptz, timestamptz) OWNER TO user_sync_owner;
ALTER FUNCTION user_event_payload(bigint, text, text, bigint, timestamptz, boolean)
    OWNER TO user_sync_owner;
ALTER FUNCTION new_trace_headers() OWNER TO user_sync_owner;
ALTER FUNCTION outbox_snapshot_users(bigint, bigint, text, text, smallint) OWNER TO user_sync_owner;
ALTER FUNCTION audit_repair_snapshot(bigint[], text, text, smallint) OWNER TO user_sync_owner;
ALTER FUNCTION audit_repair_delete(bigint[], bigint[], text, text, smallint) OWNER TO user_sync_owner;

-- The schema: the owner creates in it (later migrations); the services only use it; nobody else
-- creates in it (PostgreSQL 15 no longer lets PUBLIC, older versions did).
DO $$
DECLARE
    s CONSTANT text := current_schema();
    r text;
BEGIN
    IF NOT has_schema_privilege('user_sync_owner', s, 'CREATE') THEN
        EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO user_sync_owner', s);
    END IF;
    FOREACH r IN ARRAY ARRAY['user_sync_api', 'user_sync_relay', 'user_sync_audit'] LOOP
        IF NOT has_schema_privilege(r, s, 'USAGE') THEN
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', s, r);
        END IF;
    END LOOP;
    IF EXISTS (SELECT FROM pg_namespace n, aclexplode(n.nspacl) a
               WHERE n.nspname = s AND a.grantee = 0 AND a.privilege_type = 'CREATE') THEN
        EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', s);
    END IF;
END $$;

-- user-api: user-api/user_store.c, every statement.
GRANT SELECT, DELETE ON users TO user_sync_api;
GRANT INSERT (name, email) ON users TO user_sync_api;
GRANT UPDATE (name, email, version, updated_at) ON users TO user_sync_api;
GRANT INSERT ON outbox TO user_sync_api;
GRANT SELECT, INSERT, DELETE ON idempotency_keys TO user_sync_api;

-- outbox-relay: outbox-relay/batch.c (claim FOR UPDATE, mark, bury), retained.c (restore, sweep,
-- the backlog, outbox_stream), snapshot.c.
GRANT SELECT, DELETE ON outbox TO user_sync_relay;
GRANT UPDATE (published_seq, published_at) ON outbox TO user_sync_relay;
GRANT INSERT ON outbox_dead TO user_sync_relay;
GRANT SELECT, INSERT, UPDATE ON outbox_stream TO user_sync_relay;

-- audit: auditor/users.c; auditor/repair.c.
GRANT SELECT (id, version) ON users TO user_sync_audit;

-- A new function may be run by PUBLIC: these three only by their service.
REVOKE ALL ON FUNCTION outbox_snapshot_users(bigint, bigint, text, text, smallint) FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_repair_snapshot(bigint[], text, text, smallint) FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_repair_delete(bigint[], bigint[], text, text, smallint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox_snapshot_users(bigint, bigint, text, text, smallint)
    TO user_sync_relay;
GRANT EXECUTE ON FUNCTION audit_repair_snapshot(bigint[], text, text, smallint) TO user_sync_audit;
GRANT EXECUTE ON FUNCTION audit_repair_delete(bigint[], bigint[], text, text, smallint)
    TO user_sync_audit;
