-- Set-up of the PostgreSQL database that FerretDB uses as its store, so that the cost of the
-- consumer's versioned upsert does not grow with the copy. deploy/infra.sh (make run, make infra)
-- and the test harness apply it as a superuser to that database, on every start: it is safe to
-- apply again, and it indexes collections that already exist.
--
-- FerretDB 1.24 keeps a MongoDB database as a schema and a collection as a table with one jsonb
-- column, _jsonb, next to the schema's metadata table _ferretdb_database_metadata. It reads the
-- document an update or an upsert targets with `SELECT _jsonb FROM <schema>.<table> WHERE
-- _jsonb->$1 @> $2` (internal/backends/postgresql/query.go). Its own _id index is a unique btree
-- on (_jsonb->'_id'), which cannot serve `@>`, so every such read scanned the whole collection.
-- A GIN index on (_jsonb->'_id') jsonb_path_ops serves it, but only in a plan made for the
-- parameters' values: in a generic plan `_jsonb->$1` does not match the index's `_jsonb->'_id'`,
-- and FerretDB's driver (pgx) prepares and caches its statements, after five executions of which
-- PostgreSQL may settle on a generic plan. Hence plan_cache_mode = force_custom_plan on the
-- database.
--
-- An event trigger makes the index for every collection table FerretDB creates, in the same
-- transaction as the table. It runs as the role that creates the table (FerretDB's, the table's
-- owner), so FerretDB needs no more rights than owning its database.

-- Our functions live in a schema of their own that FerretDB's role may use but not change: a
-- MongoDB database of the same name gets "permission denied" instead of replacing or dropping
-- them (FerretDB drops a database with DROP SCHEMA ... CASCADE).
CREATE SCHEMA IF NOT EXISTS ferretdb_setup;
GRANT USAGE ON SCHEMA ferretdb_setup TO PUBLIC;

-- Makes the GIN index on (_jsonb->'_id') for tbl if tbl is a FerretDB collection table: it has the
-- jsonb column _jsonb and its schema holds FerretDB's metadata table, which is not one. Anything
-- else is left alone. The index name ends in _id_gin, which no name FerretDB gives ends in (its
-- tables end in _<8 hex digits>, its indexes in _idx); the hash of the table name keeps two long
-- names that share their first 45 characters apart.
-- fastupdate = off: with GIN's pending list, new entries wait unsorted until a vacuum merges them
-- and every lookup reads the whole list, so the cost of an event grew with the events since the
-- last vacuum (bench/ferretdb_store.py, 20,000 new users: 1.6 -> 2.4 ms per event from the first
-- to the last tenth, 485 events/s; without the list 1.5 -> 1.6 ms, 645 events/s).
CREATE OR REPLACE FUNCTION ferretdb_setup.id_index(tbl regclass) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	nsp name;
	rel name;
BEGIN
	SELECT n.nspname, c.relname INTO nsp, rel
	  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	 WHERE c.oid = tbl AND c.relkind = 'r';
	IF rel IS NULL OR rel = '_ferretdb_database_metadata' THEN
		RETURN false;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_attribute
	                WHERE attrelid = tbl AND attname = '_jsonb' AND atttypid = 'jsonb'::regtype
	                  AND NOT attisdropped)
	   OR to_regclass(format('%I._ferretdb_database_metadata', nsp)) IS NULL THEN
		RETURN false;
	END IF;
	EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s USING gin ((_jsonb->''_id'') jsonb_path_ops) WITH (fastupdate = off)',
	               format('%s_%s_id_gin', left(rel, 45), left(md5(rel), 8)), tbl);
	RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION ferretdb_setup.index_new_table() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	cmd record;
BEGIN
	FOR cmd IN SELECT objid FROM pg_event_trigger_ddl_commands()
	            WHERE command_tag = 'CREATE TABLE' AND object_type = 'table' LOOP
		PERFORM ferretdb_setup.id_index(cmd.objid::regclass);
	END LOOP;
END
$$;

DROP EVENT TRIGGER IF EXISTS ferretdb_id_gin;
CREATE EVENT TRIGGER ferretdb_id_gin ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
	EXECUTE FUNCTION ferretdb_setup.index_new_table();

-- Collections made before the trigger existed (a store set up by an older version of this file).
SELECT count(*) FILTER (WHERE ferretdb_setup.id_index(c.oid)) AS collection_tables
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'ferretdb_setup')
   AND n.nspname NOT LIKE 'pg\_%';

-- Takes effect for sessions that start after it; the callers apply this file before FerretDB runs.
DO $$
BEGIN
	EXECUTE format('ALTER DATABASE %I SET plan_cache_mode = force_custom_plan', current_database());
END
$$;
