-- `chronos reprocess --where PREDICATE` (app/services/selection.py): the predicate runs in
-- select_documents_where(), a SECURITY DEFINER function owned by chronos_selector, a role that can read
-- v_selectable_documents and nothing else. PostgreSQL refuses SET ROLE / SET SESSION AUTHORIZATION
-- inside a security-definer function, so the predicate cannot take back the caller's privileges; the
-- caller adds a READ ONLY transaction and a statement timeout. Idempotent (re-applied when changed).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chronos_selector') THEN
        CREATE ROLE chronos_selector NOLOGIN NOINHERIT;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'cannot create role chronos_selector: chronos reprocess --where stays disabled';
END;
$$;

DROP VIEW IF EXISTS v_selectable_documents CASCADE;
CREATE VIEW v_selectable_documents AS
SELECT document_id, filename, media_type, size, source, source_ref, status, current_stage, page_count,
       chunk_count, backend, pipeline, docling_version, chunk_size, embedding_model, attempts, last_error,
       error_class, failed_stage, total_cost_usd, uploaded_at, requested_at, converted_at, chunked_at,
       embedded_at, failed_at, updated_at
FROM documents
WHERE status <> 'deleted';

DROP FUNCTION IF EXISTS select_documents_where(text);
CREATE FUNCTION select_documents_where(predicate text) RETURNS TABLE (document_id uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    -- The newlines keep a trailing comment from swallowing the closing parenthesis (the caller also
    -- refuses comments and unbalanced parentheses).
    RETURN QUERY EXECUTE 'SELECT v.document_id FROM v_selectable_documents v WHERE (' || chr(10)
        || predicate || chr(10) || ')';
END;
$$;
REVOKE ALL ON FUNCTION select_documents_where(text) FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chronos_selector') THEN
        EXECUTE 'GRANT USAGE ON SCHEMA ' || quote_ident(current_schema()) || ' TO chronos_selector';
        GRANT SELECT ON v_selectable_documents TO chronos_selector;
        ALTER FUNCTION select_documents_where(text) OWNER TO chronos_selector;
        EXECUTE 'GRANT EXECUTE ON FUNCTION select_documents_where(text) TO ' || quote_ident(current_user);
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'cannot hand select_documents_where to chronos_selector: chronos reprocess --where stays disabled';
END;
$$;
