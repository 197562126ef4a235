-- Makes FerretDB 1.x on PostgreSQL answer equality filters from indexes (run on its backend
-- database by scripts/infra.sh, idempotent; needs a superuser for the event triggers).
--
-- FerretDB pushes a top-level equality filter down as `_jsonb->$1 @> $2`, but the indexes it
-- creates for createIndex are btree indexes on `(_jsonb->'field')`, which cannot answer `@>`:
-- every find, even by _id, scans the whole table. So each btree index FerretDB creates gets a
-- GIN twin (jsonb_path_ops) on the same expressions, which can, and custom plans are forced so
-- the planner sees the field name (a generic plan with `_jsonb->$1` matches no index).
-- Range filters, sorts and limits are not pushed down by FerretDB 1.x at all.

ALTER DATABASE :"DBNAME" SET plan_cache_mode = force_custom_plan;

-- The twin's name: from the btree index's schema and name, so a dropped index still names it.
CREATE OR REPLACE FUNCTION parley_gin_twin_name(schema_name name, index_name name) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT 'gin_' || md5(schema_name || '.' || index_name)
$$;

-- Creates the GIN twin of one btree index over FerretDB's `_jsonb -> …` expressions, unless it exists.
CREATE OR REPLACE FUNCTION parley_gin_twin(index_oid oid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  table_oid oid;
  schema_name name;
  method name;
  key_count int;
  expressions text[] := '{}';
  expression text;
  twin text;
BEGIN
  SELECT i.indrelid, n.nspname, a.amname, i.indnkeyatts, parley_gin_twin_name(n.nspname, c.relname)
    INTO table_oid, schema_name, method, key_count, twin
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_am a ON a.oid = c.relam
   WHERE i.indexrelid = index_oid;
  IF method IS DISTINCT FROM 'btree' OR schema_name IN ('pg_catalog', 'information_schema') THEN
    RETURN;
  END IF;
  FOR k IN 1..key_count LOOP
    expression := pg_get_indexdef(index_oid, k, false);
    IF expression !~ '^\(*_jsonb -> ' THEN
      RETURN;
    END IF;
    expressions := expressions || format('(%s) jsonb_path_ops', expression);
  END LOOP;
  IF EXISTS (SELECT FROM pg_class c WHERE c.relname = twin AND c.relnamespace = schema_name::regnamespace) THEN
    RETURN;
  END IF;
  EXECUTE format('CREATE INDEX %I ON %s USING gin (%s)', twin, table_oid::regclass, array_to_string(expressions, ', '));
END $$;

CREATE OR REPLACE FUNCTION parley_gin_twins_created() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
  command record;
BEGIN
  FOR command IN SELECT objid FROM pg_event_trigger_ddl_commands() WHERE object_type = 'index' LOOP
    PERFORM parley_gin_twin(command.objid);
  END LOOP;
END $$;

-- A twin goes when its btree index goes (dropIndexes); a dropped table takes both with it.
CREATE OR REPLACE FUNCTION parley_gin_twins_dropped() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
  dropped record;
BEGIN
  FOR dropped IN
    SELECT schema_name, object_name FROM pg_event_trigger_dropped_objects()
     WHERE object_type = 'index' AND object_name NOT LIKE 'gin\_%'
  LOOP
    EXECUTE format('DROP INDEX IF EXISTS %I.%I', dropped.schema_name,
      parley_gin_twin_name(dropped.schema_name, dropped.object_name));
  END LOOP;
END $$;

DO $$BEGIN
  IF NOT EXISTS (SELECT FROM pg_event_trigger WHERE evtname = 'parley_gin_twins_created') THEN
    CREATE EVENT TRIGGER parley_gin_twins_created ON ddl_command_end WHEN TAG IN ('CREATE INDEX')
      EXECUTE FUNCTION parley_gin_twins_created();
  END IF;
  IF NOT EXISTS (SELECT FROM pg_event_trigger WHERE evtname = 'parley_gin_twins_dropped') THEN
    CREATE EVENT TRIGGER parley_gin_twins_dropped ON sql_drop WHEN TAG IN ('DROP INDEX')
      EXECUTE FUNCTION parley_gin_twins_dropped();
  END IF;
END$$;

-- Indexes FerretDB created before the triggers existed.
SELECT parley_gin_twin(i.indexrelid)
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'public');
