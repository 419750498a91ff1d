-- chronos_analyst: a NOLOGIN role analysts are granted (GRANT chronos_analyst TO alice). It reads
-- the projections, the analyst views and the event log; it cannot write anything and cannot read
-- the raw blob store (blobs, blob_chunks, blob_uploads) nor the job queue. See docs/sql.md.
-- Idempotent (re-applied by the migrator when this file changes).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chronos_analyst') THEN
        CREATE ROLE chronos_analyst NOLOGIN;
    END IF;
END;
$$;
GRANT USAGE ON SCHEMA public TO chronos_analyst;
GRANT SELECT ON documents, chunks, chunk_rows, vectors, vectors_history, cost_ledger, chunk_sets, vector_sets,
    embedding_models, settings, events, v_documents, v_stage_events, v_stage_latency_daily, v_cost_daily,
    v_cost_by_document, v_budget_month, v_failures, v_search_models, v_document_revisions TO chronos_analyst;
REVOKE ALL ON blobs, blob_chunks, blob_uploads FROM chronos_analyst;
GRANT SELECT ON index_documents TO chronos_analyst;  -- v_search_models reads it, as the analyst (below)
GRANT EXECUTE ON FUNCTION search_chunks(vector, integer, text) TO chronos_analyst;
GRANT EXECUTE ON FUNCTION search_chunks_as_of(vector, integer, text, bigint) TO chronos_analyst;
GRANT EXECUTE ON FUNCTION search_chunks_hybrid(text, vector, integer, text, text, bigint, uuid[], text, text[], text[],
                                               timestamptz, timestamptz, text[], jsonb[]) TO chronos_analyst;
GRANT EXECUTE ON FUNCTION chronos_or_tsquery(text) TO chronos_analyst;
GRANT EXECUTE ON FUNCTION chronos_snippet(text, tsquery[], double precision[], tsquery) TO chronos_analyst;
GRANT EXECUTE ON FUNCTION chronos_idf(double precision, double precision) TO chronos_analyst;
GRANT EXECUTE ON FUNCTION chronos_text_pass(text[], bigint[], tsquery, double precision, text, uuid[], bigint, integer,
                                            double precision) TO chronos_analyst;

-- pgvector installed in another schema (Supabase: extensions): analysts need its type and operators.
DO $$
DECLARE
    s name := (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
               WHERE e.extname = 'vector');
BEGIN
    IF s IS NOT NULL AND s <> 'public' THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO chronos_analyst', s);
    END IF;
END;
$$;

-- PUBLIC's defaults, which every role that can connect has (analysts, chronos_selector, any login):
--   * EXECUTE on pg_notify() (wake or flood the listeners) and on the large-object functions
--     (lo_create, lo_from_bytea, lo_put, lowrite ...: store data where no projection sees it);
--   * CREATE on this schema (tables, functions; PostgreSQL 15+ no longer grants it, older clusters
--     upgraded in place still do);
--   * TEMP on the database (temporary tables, and functions in pg_temp): revoked by
--     chronos_revoke_public_temp(), below, which app/db.py also calls at every start because CREATE
--     DATABASE ... TEMPLATE does not copy a database's privileges.
-- The service's role gets the function privileges explicitly first, so it keeps them where it is not a
-- superuser. Revoking EXECUTE on pg_catalog functions needs a superuser: elsewhere this block changes
-- nothing and says so (docs/sql.md). The NOTIFY *statement* checks no privilege at all: it cannot be
-- refused to a role that can connect; listeners treat a notification as a wake-up only.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'pg_catalog'::regnamespace
          AND (p.proname IN ('pg_notify', 'loread', 'lowrite') OR p.proname LIKE 'lo\_%')
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, current_user);
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'PUBLIC keeps EXECUTE on pg_notify() and the large-object functions: % (needs a superuser)',
        SQLERRM;
END;
$$;

DO $$
BEGIN
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', current_schema());
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'PUBLIC keeps CREATE on schema %: % (needs its owner)', current_schema(), SQLERRM;
END;
$$;

CREATE OR REPLACE FUNCTION chronos_revoke_public_temp() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
               WHERE d.datname = current_database() AND a.grantee = 0 AND a.privilege_type = 'TEMPORARY') THEN
        EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO %I', current_database(), current_user);
        EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'PUBLIC keeps TEMP on database %: % (needs its owner)', current_database(), SQLERRM;
END;
$$;
REVOKE ALL ON FUNCTION chronos_revoke_public_temp() FROM PUBLIC;
SELECT chronos_revoke_public_temp();

