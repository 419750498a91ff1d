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
