-- Analysts limited to some collections (issue 15; docs/sql.md "Analysts limited to some collections").
-- The last view file on purpose: it makes every view chronos_analyst may read (granted by the files
-- before it) run with its reader's rights. Idempotent: re-applied by the migrator whenever a view file
-- before it is, and after every replay swap.
-- `chronos analysts grant ROLE --collection NAME` (or INSERT INTO analyst_collections) limits ROLE -- and
-- every role that is a member of it -- to those collections: row-level security on every projection and
-- on the event log shows them only those collections' rows; a role granted no collection (chronos_analyst
-- itself) sees every row. The service's role owns the tables (or is a superuser) and so is never limited.
-- Every view the analyst role can read runs with its reader's rights (security_invoker), so the policies
-- apply inside the views too; views owned by the service would otherwise read past them.

-- The collections a role is limited to: those granted to it or to any role it is a member of (NULL: none
-- granted, every collection).
CREATE OR REPLACE FUNCTION chronos_role_collections(who name) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN count(*) = 0 THEN NULL ELSE array_agg(DISTINCT a.collection) END
    FROM public.analyst_collections a JOIN pg_roles r ON r.rolname = a.role_name
    WHERE pg_has_role(who, r.oid, 'MEMBER')
$$;
REVOKE ALL ON FUNCTION chronos_role_collections(name) FROM PUBLIC;

-- The collections a reader acting as `who` (the policies pass current_user) may see; NULL: every one.
-- The limits of the logged-in role (session_user) apply too, so a limited role cannot shed them with
-- SET ROLE chronos_analyst (a superuser's session has none: it bypasses row-level security anyway).
-- SECURITY DEFINER: analysts cannot read analyst_collections; asking for a role one is not a member of
-- answers '{}' (nothing), so a reader learns only their own grants.
CREATE OR REPLACE FUNCTION chronos_analyst_collections(who name) RETURNS text[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    mine text[];
    logged_in text[];
BEGIN
    IF NOT pg_has_role(session_user, who, 'MEMBER') THEN
        RETURN '{}'::text[];
    END IF;
    mine := public.chronos_role_collections(who);
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
        logged_in := public.chronos_role_collections(session_user);
    END IF;
    IF mine IS NULL OR logged_in IS NULL THEN
        RETURN coalesce(mine, logged_in);
    END IF;
    RETURN ARRAY(SELECT unnest(mine) INTERSECT SELECT unnest(logged_in));
END;
$$;
GRANT EXECUTE ON FUNCTION chronos_analyst_collections(name) TO PUBLIC;

-- One policy per table (idempotent: dropped and created again; re-applied after a replay swaps the tables).
-- The scalar subquery runs once per statement. Rows tied to a document are visible when its documents row
-- is (the subquery on documents is itself filtered by documents' policy).
DO $$
DECLARE
    t text;
    by_collection constant text :=
        '(SELECT chronos_analyst_collections(current_user)) IS NULL '
        'OR collection = ANY ((SELECT chronos_analyst_collections(current_user))::text[])';
    by_document constant text :=
        '(SELECT chronos_analyst_collections(current_user)) IS NULL '
        'OR document_id IN (SELECT d.document_id FROM documents d)';
BEGIN
    FOREACH t IN ARRAY ARRAY['documents', 'chunk_rows'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('DROP POLICY IF EXISTS chronos_collections ON %I', t);
        EXECUTE format('CREATE POLICY chronos_collections ON %I FOR SELECT USING (%s)', t, by_collection);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['chunk_sets', 'vectors', 'vectors_history', 'vector_sets', 'cost_ledger',
                             'index_documents'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('DROP POLICY IF EXISTS chronos_collections ON %I', t);
        EXECUTE format('CREATE POLICY chronos_collections ON %I FOR SELECT USING (%s)', t, by_document);
    END LOOP;
    IF to_regclass('collections') IS NOT NULL THEN
        ALTER TABLE collections ENABLE ROW LEVEL SECURITY;
        DROP POLICY IF EXISTS chronos_collections ON collections;
        CREATE POLICY chronos_collections ON collections FOR SELECT USING (
            (SELECT chronos_analyst_collections(current_user)) IS NULL
            OR name = ANY ((SELECT chronos_analyst_collections(current_user))::text[]));
    END IF;
END;
$$;

-- The log: a limited role sees the streams of its documents and of its collections, nothing else (token,
-- search, budget and batch streams are the whole service's). Other roles' INSERTs (a script appending
-- events) stay allowed: RLS would refuse them without a policy for INSERT.
ALTER TABLE events ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS chronos_collections ON events;
CREATE POLICY chronos_collections ON events FOR SELECT USING (
    (SELECT chronos_analyst_collections(current_user)) IS NULL
    OR (stream_id LIKE 'document-%' AND substr(stream_id, 10) IN (SELECT d.document_id::text FROM documents d))
    OR (stream_id LIKE 'collection-%' AND substr(stream_id, 12) = ANY ((SELECT chronos_analyst_collections(current_user))::text[])));
DROP POLICY IF EXISTS chronos_writers ON events;
CREATE POLICY chronos_writers ON events FOR INSERT WITH CHECK (true);

DO $$
DECLARE
    v regclass;
BEGIN
    FOR v IN
        SELECT c.oid::regclass FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'v'
          AND has_table_privilege('chronos_analyst', c.oid, 'SELECT')
    LOOP
        EXECUTE format('ALTER VIEW %s SET (security_invoker = true)', v);
    END LOOP;
END;
$$;
