-- ensure_vector_index, second version: models of 2001..4000 dimensions get an HNSW index too, on the
-- half-precision cast (pgvector's HNSW indexes `vector` up to 2000 dimensions, `halfvec` up to 4000).
-- text-embedding-3-large (3072) used to make this raise, which stalled the vectors projection for every
-- document. The column stays `vector` (float32, what the blobs hold); only the index and the query's
-- cast (search_chunks) are half precision. Up to 2000 dimensions nothing changes, so existing indexes
-- keep their definition. Above 4000 it still refuses, with the way out in the message; the vectors
-- projector checks first and records such a set in vector_problems instead of calling this.
-- The type a model's vectors are indexed (and searched) as: vector up to 2000 dimensions, else halfvec.
CREATE OR REPLACE FUNCTION vector_index_type(p_dimensions integer) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN p_dimensions <= 2000 THEN 'vector' ELSE 'halfvec' END $$;

CREATE OR REPLACE FUNCTION ensure_vector_index(p_model text, p_dimensions integer) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    idx text := 'vectors_hnsw_' || left(md5(p_model), 16);
    m   integer := coalesce((SELECT value::integer FROM settings WHERE key = 'hnsw_m'), 16);
    efc integer := coalesce((SELECT value::integer FROM settings WHERE key = 'hnsw_ef_construction'), 64);
BEGIN
    IF p_dimensions IS NULL OR p_dimensions < 1 OR p_dimensions > 4000 THEN
        RAISE EXCEPTION 'cannot index % vectors of % dimensions (HNSW: vector up to 2000, halfvec up to 4000); '
                        'embed with fewer dimensions (openai:<model>@N)', p_model, p_dimensions;
    END IF;
    EXECUTE format(
        'CREATE INDEX IF NOT EXISTS %I ON vectors USING hnsw ((embedding::%s(%s)) %s) '
        'WITH (m = %s, ef_construction = %s) WHERE model = %L',
        idx, vector_index_type(p_dimensions), p_dimensions, vector_index_type(p_dimensions) || '_cosine_ops',
        m, efc, p_model);
    RETURN idx;
END;
$$;
