-- Hybrid search for analysts and for `chronos search` / GET /search (docs/search.md): full-text search
-- over each chunk's text and context (chunk_rows.tsv, GIN) fused with vector search by reciprocal rank
-- fusion, with filters, as of a past moment, and a highlighted snippet. Idempotent.

-- The words of a question as an OR query (any word may match; chunks matching more words rank
-- higher): `english` drops stop words and stems, keeps numbers and codes ("1911", "8.8", "chronos-495").
-- NULL when the question has no searchable word.
DROP FUNCTION IF EXISTS chronos_or_tsquery(text);
CREATE FUNCTION chronos_or_tsquery(question text) RETURNS tsquery
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT nullif(string_agg(quote_literal(replace(t.lexeme, '\', '')), ' | ' ORDER BY t.lexeme), '')::tsquery
    FROM unnest(to_tsvector('english'::regconfig, coalesce(question, ''))) AS t
    WHERE t.lexeme NOT LIKE '%\%';
$$;

-- mode: 'hybrid' (default), 'vector' or 'text'. query_vector may be NULL in text mode. model NULL: the
-- active model. at_position: the chunks that served at that log position (NULL: now). Filters (NULL:
-- none): document ids, filename LIKE pattern (case-insensitive), media types, sources, upload range.
-- Under a filter the vector side is an exact scan when the filter leaves at most 20,000 vectors, else
-- an HNSW iterative scan (pgvector 0.8, strict order) — the true top candidates either way.
-- score: RRF (hybrid), cosine similarity (vector), ts_rank (text).
DROP FUNCTION IF EXISTS search_chunks_hybrid(text, vector, integer, text, text, bigint, uuid[], text, text[], text[],
                                              timestamptz, timestamptz);
CREATE FUNCTION search_chunks_hybrid(
    query text, query_vector vector, k integer DEFAULT 5, model text DEFAULT NULL, mode text DEFAULT 'hybrid',
    at_position bigint DEFAULT NULL, document_ids uuid[] DEFAULT NULL, filename_like text DEFAULT NULL,
    media_types text[] DEFAULT NULL, sources text[] DEFAULT NULL, uploaded_from timestamptz DEFAULT NULL,
    uploaded_to timestamptz DEFAULT NULL)
RETURNS TABLE (chunk_id uuid, document_id uuid, filename text, title text, ordinal integer, text text,
               pages integer[], heading_path text[], char_start integer, char_end integer, score double precision,
               similarity double precision, vector_rank integer, text_rank integer, snippet text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    m text := search_chunks_hybrid.model;
    d integer;
    ef integer;
    n integer := greatest(search_chunks_hybrid.k * 4, 40);  -- candidates from each side
    tq tsquery := chronos_or_tsquery(search_chunks_hybrid.query);
    allowed uuid[];
    filtered boolean := document_ids IS NOT NULL OR filename_like IS NOT NULL OR media_types IS NOT NULL
                        OR sources IS NOT NULL OR uploaded_from IS NOT NULL OR uploaded_to IS NOT NULL;
    vec_ids uuid[] := '{}';
    vec_sim double precision[] := '{}';
    txt_ids uuid[] := '{}';
    txt_rank real[] := '{}';
    reachable bigint;
BEGIN
    IF mode NOT IN ('hybrid', 'vector', 'text') THEN
        RAISE EXCEPTION 'mode must be hybrid, vector or text, not %', mode;
    END IF;
    IF k < 1 THEN
        RAISE EXCEPTION 'k must be at least 1, not %', k;
    END IF;
    IF m IS NULL THEN
        SELECT s.model, s.dimensions INTO m, d FROM v_search_models s WHERE s.active;
        IF m IS NULL THEN
            RAISE EXCEPTION 'nothing is searchable yet: no document has vectors';
        END IF;
    ELSE
        SELECT e.dimensions INTO d FROM embedding_models e WHERE e.model = m;
        IF d IS NULL THEN
            RAISE EXCEPTION 'no vectors for model %', m;
        END IF;
    END IF;
    IF mode <> 'text' THEN
        IF query_vector IS NULL THEN
            RAISE EXCEPTION 'mode % needs a query vector', mode;
        END IF;
        IF vector_dims(query_vector) <> d THEN
            RAISE EXCEPTION 'the query vector has % dimensions; model % has %', vector_dims(query_vector), m, d;
        END IF;
    END IF;
    IF filtered THEN
        SELECT coalesce(array_agg(doc.document_id), '{}') INTO allowed FROM documents doc
        WHERE doc.status <> 'deleted'
          AND (search_chunks_hybrid.document_ids IS NULL OR doc.document_id = ANY (search_chunks_hybrid.document_ids))
          AND (filename_like IS NULL OR doc.filename ILIKE filename_like)
          AND (media_types IS NULL OR doc.media_type = ANY (media_types))
          AND (sources IS NULL OR doc.source = ANY (sources))
          AND (uploaded_from IS NULL OR doc.uploaded_at >= uploaded_from)
          AND (uploaded_to IS NULL OR doc.uploaded_at < uploaded_to);
    END IF;

    -- the vector side
    IF mode <> 'text' THEN
        IF at_position IS NOT NULL THEN  -- what served then: current rows from before it, and history
            SELECT coalesce(array_agg(s.chunk_id ORDER BY s.distance), '{}'),
                   coalesce(array_agg(1 - s.distance ORDER BY s.distance), '{}')
            INTO vec_ids, vec_sim
            FROM (SELECT a.chunk_id, a.embedding <=> query_vector AS distance FROM (
                      SELECT v.chunk_id, v.embedding, v.document_id FROM vectors v
                      WHERE v.model = m AND v.valid_from <= at_position
                      UNION ALL
                      SELECT h.chunk_id, h.embedding, h.document_id FROM vectors_history h
                      WHERE h.model = m AND h.valid_from <= at_position AND h.valid_to > at_position) a
                  WHERE allowed IS NULL OR a.document_id = ANY (allowed)
                  ORDER BY a.embedding <=> query_vector LIMIT n) s;
        ELSE
            IF allowed IS NOT NULL THEN
                SELECT count(*) INTO reachable FROM vectors v WHERE v.model = m AND v.document_id = ANY (allowed);
            END IF;
            IF allowed IS NOT NULL AND reachable <= 20000 THEN  -- a selective filter: an exact scan
                SELECT coalesce(array_agg(s.chunk_id ORDER BY s.distance), '{}'),
                       coalesce(array_agg(1 - s.distance ORDER BY s.distance), '{}')
                INTO vec_ids, vec_sim
                FROM (SELECT v.chunk_id, v.embedding <=> query_vector AS distance FROM vectors v
                      WHERE v.model = m AND v.document_id = ANY (allowed)
                      ORDER BY v.embedding <=> query_vector LIMIT n) s;
            ELSE
                ef := greatest(n, coalesce((SELECT value::integer FROM settings WHERE key = 'hnsw_ef_search'), 40));
                PERFORM set_config('hnsw.ef_search', ef::text, true);
                IF allowed IS NOT NULL THEN
                    PERFORM set_config('hnsw.iterative_scan', 'strict_order', true);
                    PERFORM set_config('hnsw.max_scan_tuples', '200000', true);
                END IF;
                EXECUTE format(
                    'SELECT coalesce(array_agg(s.chunk_id ORDER BY s.distance), ''{}''),
                            coalesce(array_agg(1 - s.distance ORDER BY s.distance), ''{}'')
                     FROM (SELECT v.chunk_id, v.embedding::vector(%s) <=> $1::vector(%s) AS distance
                           FROM vectors v WHERE v.model = %L AND ($3::uuid[] IS NULL OR v.document_id = ANY ($3))
                           ORDER BY v.embedding::vector(%s) <=> $1::vector(%s) LIMIT $2) s', d, d, m, d, d)
                INTO vec_ids, vec_sim USING query_vector, n, allowed;
            END IF;
        END IF;
    END IF;

    -- the text side: rows of the sets serving now (or then), every query word OR-ed
    IF mode <> 'vector' AND tq IS NOT NULL THEN
        IF at_position IS NOT NULL THEN
            SELECT coalesce(array_agg(s.chunk_id ORDER BY s.r DESC, s.chunk_id), '{}'),
                   coalesce(array_agg(s.r ORDER BY s.r DESC, s.chunk_id), '{}')
            INTO txt_ids, txt_rank
            FROM (SELECT c.chunk_id, ts_rank(c.tsv, tq) AS r FROM chunk_rows c
                  WHERE c.tsv @@ tq AND (allowed IS NULL OR c.document_id = ANY (allowed))
                    AND c.chunk_id IN (SELECT v.chunk_id FROM vectors v
                                       WHERE v.model = m AND v.valid_from <= at_position
                                       UNION ALL
                                       SELECT h.chunk_id FROM vectors_history h
                                       WHERE h.model = m AND h.valid_from <= at_position AND h.valid_to > at_position)
                  ORDER BY r DESC, c.chunk_id LIMIT n) s;
        ELSE
            SELECT coalesce(array_agg(s.chunk_id ORDER BY s.r DESC, s.chunk_id), '{}'),
                   coalesce(array_agg(s.r ORDER BY s.r DESC, s.chunk_id), '{}')
            INTO txt_ids, txt_rank
            FROM (SELECT c.chunk_id, ts_rank(c.tsv, tq) AS r FROM chunk_rows c
                  JOIN vector_sets vs ON vs.document_id = c.document_id AND vs.chunk_set_id = c.chunk_set_id
                                     AND vs.model = m
                  WHERE c.serving AND c.tsv @@ tq AND (allowed IS NULL OR c.document_id = ANY (allowed))
                  ORDER BY r DESC, c.chunk_id LIMIT n) s;
        END IF;
    END IF;

    RETURN QUERY
    WITH vr AS (
        SELECT t.id, t.rank::integer AS rank, vec_sim[t.rank] AS sim FROM unnest(vec_ids) WITH ORDINALITY AS t(id, rank)
    ), tr AS (
        SELECT t.id, t.rank::integer AS rank, txt_rank[t.rank] AS r FROM unnest(txt_ids) WITH ORDINALITY AS t(id, rank)
    ), fused AS (
        SELECT coalesce(vr.id, tr.id) AS id, vr.rank AS vrank, tr.rank AS trank, vr.sim, tr.r,
               CASE mode WHEN 'vector' THEN vr.sim
                         WHEN 'text' THEN tr.r::double precision
                         ELSE coalesce(1.0 / (60 + vr.rank), 0) + coalesce(1.0 / (60 + tr.rank), 0) END AS fused_score
        FROM vr FULL JOIN tr ON tr.id = vr.id
        ORDER BY fused_score DESC, coalesce(vr.rank, 1000000), coalesce(tr.rank, 1000000)
        LIMIT k
    )
    SELECT c.chunk_id, c.document_id, doc.filename, nullif(c.title, ''), c.ordinal, c.text, c.pages, c.heading_path,
           c.char_start, c.char_end, f.fused_score, f.sim, f.vrank, f.trank,
           CASE WHEN tq IS NOT NULL AND c.tsv @@ tq
                THEN ts_headline('english'::regconfig, c.text, tq,
                                 'MaxFragments=2, MaxWords=30, MinWords=12, FragmentDelimiter=" … ", StartSel=**, StopSel=**')
                ELSE left(regexp_replace(c.text, '\s+', ' ', 'g'), 240) END
    FROM fused f
    JOIN chunk_rows c ON c.chunk_id = f.id
    JOIN documents doc ON doc.document_id = c.document_id
    WHERE doc.status <> 'deleted' OR at_position IS NOT NULL
    ORDER BY f.fused_score DESC, coalesce(f.vrank, 1000000), coalesce(f.trank, 1000000);
END;
$$;
