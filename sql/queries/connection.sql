-- name: session_init
-- Once per new connection (events/connection.py). Session settings go here rather than into the
-- startup packet: PgBouncer and Supavisor refuse unknown startup parameters ("unsupported startup
-- parameter: chronos.app_notifier"). Also where pgvector lives: managed hosts install it in another
-- schema (Supabase: `extensions`), and its codec, type and operators need that schema.
SELECT set_config('chronos.app_notifier', 'on', false) AS app_notifier,
       n.nspname AS vector_schema,
       n.nspname = ANY (current_schemas(false)) AS vector_on_path
FROM (SELECT 1) AS one
LEFT JOIN pg_extension e ON e.extname = 'vector'
LEFT JOIN pg_namespace n ON n.oid = e.extnamespace;

-- name: append_search_path
-- $1 = a schema to search after the current ones (for this session).
SELECT set_config('search_path', current_setting('search_path') || ', ' || quote_ident($1), false);

-- name: backend_pid
SELECT pg_backend_pid();

-- name: set_local_search_path
-- For the current transaction: the schemas $1 (text[], in order), then pgvector's schema when it is
-- installed elsewhere (replay's shadow schema and re-applied views need its type and operators).
SELECT set_config('search_path', string_agg(quote_ident(s.name), ', ' ORDER BY s.n), true)
FROM unnest($1::text[] || ARRAY(
         SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
         WHERE e.extname = 'vector' AND n.nspname <> ALL ($1::text[]))) WITH ORDINALITY AS s(name, n);

-- name: set_session_search_path
-- Like set_local_search_path, for the session (a statement that cannot run in a transaction block,
-- such as CREATE INDEX CONCURRENTLY, on replay's shadow tables); restore_search_path puts back what
-- current_search_path returned before (the pool's own setting, e.g. an extensions schema).
SELECT set_config('search_path', string_agg(quote_ident(s.name), ', ' ORDER BY s.n), false)
FROM unnest($1::text[] || ARRAY(
         SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
         WHERE e.extname = 'vector' AND n.nspname <> ALL ($1::text[]))) WITH ORDINALITY AS s(name, n);

-- name: current_search_path
SELECT current_setting('search_path');

-- name: restore_search_path
SELECT set_config('search_path', $1, false);
