-- Search: which embedding model answers queries, and search_chunks() for analysts.
-- Idempotent (re-applied by the migrator when this file changes, and after every replay swap).

-- The active model: the most recently introduced model that covers every searchable document
-- (one with vectors of some model). While a new model
-- is being rolled out, the old one keeps answering; once the new one covers every document, search
-- switches in one step. settings.search_model pins a model by hand.
DROP VIEW IF EXISTS v_search_models CASCADE;
CREATE VIEW v_search_models AS
WITH docs AS (
    SELECT DISTINCT s.document_id FROM vector_sets s JOIN index_documents d USING (document_id) WHERE NOT d.deleted
), total AS (
    SELECT count(*) AS n FROM docs
), cov AS (
    SELECT m.model, m.dimensions, m.index_name, m.first_position,
           count(docs.document_id) AS covered_documents
    FROM embedding_models m
    LEFT JOIN vector_sets s ON s.model = m.model
    LEFT JOIN docs ON docs.document_id = s.document_id
    GROUP BY m.model, m.dimensions, m.index_name, m.first_position
)
SELECT cov.model, cov.dimensions, cov.index_name, cov.covered_documents, total.n AS documents,
       cov.covered_documents = total.n AS complete,
       row_number() OVER (
           ORDER BY cov.model IS NOT DISTINCT FROM (SELECT value FROM settings WHERE key = 'search_model') DESC,
                    cov.covered_documents = total.n DESC, cov.covered_documents DESC, cov.first_position DESC
       ) = 1 AS active
FROM cov, total;

-- The model a search uses (NULL: the active one) and its dimensions; refuses a query of another size.
DROP FUNCTION IF EXISTS search_model(text, vector);
CREATE FUNCTION search_model(p_model text, p_query vector, OUT model text, OUT dimensions integer)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_model IS NULL THEN
        SELECT s.model, s.dimensions INTO model, dimensions FROM v_search_models s WHERE s.active;
        IF model IS NULL THEN
            RAISE EXCEPTION 'nothing is searchable yet: no document has vectors';
        END IF;
    ELSE
        model := p_model;
        SELECT e.dimensions INTO dimensions FROM embedding_models e WHERE e.model = p_model;
        IF dimensions IS NULL THEN
            RAISE EXCEPTION 'no vectors for model %', p_model;
        END IF;
    END IF;
    IF vector_dims(p_query) <> dimensions THEN
        RAISE EXCEPTION 'the query vector has % dimensions; model % has %', vector_dims(p_query), model, dimensions;
    END IF;
END;
$$;

-- The statement search_chunks runs for a model ($1 the query vector, $2 k): the model and dimension go
-- in as literals, so the planner matches the partial expression index (a parameter would not); models
-- of more than 2000 dimensions are indexed as halfvec (sql/040_halfvec_vector_index.sql), so both
-- sides are cast to halfvec(d) for them, as the index expression is.
DROP FUNCTION IF EXISTS search_chunks_statement(text, integer);
CREATE FUNCTION search_chunks_statement(p_model text, p_dimensions integer) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT format(
    'SELECT c.chunk_id, c.document_id, doc.filename, c.ordinal, c.text, c.pages, c.heading_path,
            (1 - h.distance)::double precision
     FROM (SELECT v.chunk_id, v.embedding::%1$s(%2$s) <=> $1::%1$s(%2$s) AS distance
           FROM vectors v WHERE v.model = %3$L
           ORDER BY v.embedding::%1$s(%2$s) <=> $1::%1$s(%2$s) LIMIT $2) h
     JOIN chunks c ON c.chunk_id = h.chunk_id
     JOIN documents doc ON doc.document_id = c.document_id
     WHERE doc.status <> ''deleted''
     ORDER BY h.distance', vector_index_type(p_dimensions), p_dimensions, p_model)
$$;

-- Nearest chunks to `query` with `model`'s vectors (NULL: the active model), through that model's
-- HNSW index.
DROP FUNCTION IF EXISTS search_chunks(vector, integer, text);
CREATE FUNCTION search_chunks(query vector, k integer DEFAULT 5, model text DEFAULT NULL)
RETURNS TABLE (chunk_id uuid, document_id uuid, filename text, ordinal integer, text text, pages integer[],
               heading_path text[], score double precision)
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan  -- every statement inside planned for its values (docs/search.md)
AS $$
#variable_conflict use_column
DECLARE
    s record;
BEGIN
    SELECT * INTO s FROM search_model(search_chunks.model, query);
    PERFORM set_config('hnsw.ef_search',
                       greatest(k, coalesce((SELECT value::integer FROM settings WHERE key = 'hnsw_ef_search'), 40))::text,
                       true);
    RETURN QUERY EXECUTE search_chunks_statement(s.model, s.dimensions) USING query, k;
END;
$$;

-- The executed plan of search_chunks(query, k, model): EXPLAIN (ANALYZE) of the very statement it runs,
-- with its settings. Shows whether the model's HNSW index answered (Index Scan using vectors_hnsw_...).
DROP FUNCTION IF EXISTS explain_search_chunks(vector, integer, text);
CREATE FUNCTION explain_search_chunks(query vector, k integer DEFAULT 5, model text DEFAULT NULL)
RETURNS SETOF text
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    s record;
BEGIN
    SELECT * INTO s FROM search_model(explain_search_chunks.model, query);
    PERFORM set_config('hnsw.ef_search',
                       greatest(k, coalesce((SELECT value::integer FROM settings WHERE key = 'hnsw_ef_search'), 40))::text,
                       true);
    RETURN QUERY EXECUTE 'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) ' || search_chunks_statement(s.model, s.dimensions)
        USING query, k;
END;
$$;

-- Search as of a past moment: the chunks whose vectors served at log position `at_position` (current
-- rows that served from before it, and rows that served then and were replaced later). An exact scan
-- (no HNSW index covers history); deleted documents are gone from every moment. Distances are taken in
-- the type the model is indexed and searched as (vector up to 2000 dimensions, else halfvec: see
-- search_chunks_statement), so a moment that is now scores exactly as search_chunks does.
DROP FUNCTION IF EXISTS search_chunks_as_of(vector, integer, text, bigint);
CREATE FUNCTION search_chunks_as_of(query vector, k integer, model text, at_position bigint)
RETURNS TABLE (chunk_id uuid, document_id uuid, filename text, ordinal integer, text text, pages integer[],
               heading_path text[], score double precision)
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
DECLARE
    d integer;
BEGIN
    SELECT e.dimensions INTO d FROM embedding_models e WHERE e.model = search_chunks_as_of.model;
    IF d IS NULL THEN
        RAISE EXCEPTION 'no vectors for model %', search_chunks_as_of.model;
    END IF;
    IF vector_dims(query) <> d THEN
        RAISE EXCEPTION 'the query vector has % dimensions; model % has %', vector_dims(query),
            search_chunks_as_of.model, d;
    END IF;
    RETURN QUERY EXECUTE format(
        'WITH served AS (
             SELECT v.chunk_id, v.embedding::%1$s(%2$s) AS embedding FROM vectors v
             WHERE v.model = $3 AND v.valid_from <= $4
             UNION ALL
             SELECT h.chunk_id, h.embedding::%1$s(%2$s) FROM vectors_history h
             WHERE h.model = $3 AND h.valid_from <= $4 AND h.valid_to > $4
         ), nearest AS (
             SELECT s.chunk_id, s.embedding <=> $1::%1$s(%2$s) AS distance FROM served s
             ORDER BY s.embedding <=> $1::%1$s(%2$s) LIMIT $2
         )
         SELECT c.chunk_id, c.document_id, doc.filename, c.ordinal, c.text, c.pages, c.heading_path,
                (1 - n.distance)::double precision
         FROM nearest n
         JOIN chunk_rows c ON c.chunk_id = n.chunk_id
         JOIN documents doc ON doc.document_id = c.document_id
         ORDER BY n.distance', vector_index_type(d), d)
    USING query, k, search_chunks_as_of.model, at_position;
END;
$$;
