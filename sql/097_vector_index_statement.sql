-- The HNSW index of a model as a statement (vector_index_statement), so replay can run it as
-- CREATE INDEX CONCURRENTLY outside a transaction. A plain CREATE INDEX holds a transaction id for
-- the whole build (40 minutes at 1M vectors), and the log's safe horizon (pg_snapshot_xmin) is the
-- server's oldest open transaction id, so every live subscriber -- in every database of the server --
-- stopped at the events committed after the build began until it ended. A concurrent build takes a
-- transaction id only for its short catalog steps. The table is named with its schema as the
-- caller's search_path resolves it (replay's shadow schema), so the statement runs the same anywhere.
-- ensure_vector_index (the live projector's, on a model's first vectors) builds the same index.
CREATE OR REPLACE FUNCTION vector_index_statement(p_model text, p_dimensions integer, p_concurrently boolean)
RETURNS TABLE (index_name text, statement text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    idx   text := 'vectors_hnsw_' || left(md5(p_model), 16);
    m     integer := coalesce((SELECT value::integer FROM settings WHERE key = 'hnsw_m'), 16);
    efc   integer := coalesce((SELECT value::integer FROM settings WHERE key = 'hnsw_ef_construction'), 64);
    tbl   text;
BEGIN
    IF p_dimensions IS NULL OR p_dimensions < 1 OR p_dimensions > 4000 THEN
        RAISE EXCEPTION 'cannot index % vectors of % dimensions (HNSW: vector up to 2000, halfvec up to 4000); '
                        'embed with fewer dimensions (openai:<model>@N)', p_model, p_dimensions;
    END IF;
    SELECT format('%I.%I', n.nspname, c.relname) INTO tbl
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = 'vectors'::regclass;
    RETURN QUERY SELECT idx, format(
        'CREATE INDEX %s IF NOT EXISTS %I ON %s USING hnsw ((embedding::%s(%s)) %s) '
        'WITH (m = %s, ef_construction = %s) WHERE model = %L',
        CASE WHEN p_concurrently THEN 'CONCURRENTLY' ELSE '' END, idx, tbl, vector_index_type(p_dimensions),
        p_dimensions, vector_index_type(p_dimensions) || '_cosine_ops', m, efc, p_model);
END;
$$;

CREATE OR REPLACE FUNCTION ensure_vector_index(p_model text, p_dimensions integer) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    s record;
BEGIN
    SELECT * INTO s FROM vector_index_statement(p_model, p_dimensions, false);
    EXECUTE s.statement;
    RETURN s.index_name;
END;
$$;
