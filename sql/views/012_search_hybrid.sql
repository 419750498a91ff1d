-- Hybrid search for analysts and for `chronos search` / GET /search (docs/search.md): full-text search
-- over each chunk's text and context (chunk_rows.tsv, GIN) fused with vector search by reciprocal rank
-- fusion, with filters, as of a past moment, and a highlighted snippet. Idempotent.

-- The words of a question as an OR query (any word may match; chunks matching more words rank
-- higher): `english` drops stop words and stems, keeps numbers and codes ("1911", "8.8", "chronos-495").
-- NULL when the question has no searchable word.
DROP FUNCTION IF EXISTS chronos_or_tsquery(text);
CREATE FUNCTION chronos_or_tsquery(question text) RETURNS tsquery
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT nullif(string_agg(quote_literal(t.lexeme), ' | ' ORDER BY t.lexeme), '')::tsquery
    FROM unnest(to_tsvector('english'::regconfig, coalesce(question, ''))) AS t
    WHERE strpos(t.lexeme, '\') = 0;
$$;

-- A short snippet of `body`: its (at most two) sentences holding the most of the question's words,
-- weighted by `weights` (idf), in text order, each cut to about 40 words around its matches, the
-- question's words in **bold**. The first 240 characters when no sentence holds any of them.
DROP FUNCTION IF EXISTS chronos_snippet(text, tsquery[], double precision[], tsquery);
CREATE FUNCTION chronos_snippet(body text, words tsquery[], weights double precision[], q tsquery) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH s AS (  -- each sentence's tsvector made once (not once per word)
        SELECT t.ord, regexp_replace(t.sentence, '\s+', ' ', 'g') AS sentence,
               (SELECT coalesce(sum(weights[i]), 0) FROM generate_subscripts(words, 1) i WHERE v.tv @@ words[i]) AS w
        FROM regexp_split_to_table(body, '(?<=[.!?])\s+|\n\s*\n') WITH ORDINALITY AS t(sentence, ord)
        CROSS JOIN LATERAL (SELECT to_tsvector('english'::regconfig, t.sentence) AS tv OFFSET 0) v  -- OFFSET 0: not inlined
        WHERE t.sentence ~ '[[:alnum:]]'
    ), best AS (
        SELECT s.ord, s.sentence FROM s WHERE s.w > 0 ORDER BY s.w DESC, s.ord LIMIT 2
    )
    SELECT CASE WHEN count(*) = 0 OR q IS NULL THEN left(regexp_replace(body, '\s+', ' ', 'g'), 240)
                ELSE string_agg(ts_headline('english'::regconfig, best.sentence, q,
                                            'MaxWords=40, MinWords=20, StartSel=**, StopSel=**'), ' … '
                                ORDER BY best.ord) END
    FROM best;
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
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan  -- every statement inside planned for its values (docs/search.md)
AS $$
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
    txt_rank double precision[] := '{}';
    txt_exact boolean[] := '{}';
    reachable bigint;
    total bigint;
    words text[];  -- the question's distinct lexemes
    lex_q tsquery[];  -- each of them as a query
    word_df bigint[];  -- their document frequencies, when known before the candidates are taken
    counted_df bigint[];
    idf double precision[] := '{}';
    rare boolean[] := '{}';  -- an identifier or figure (has a digit) that few chunks hold
    df bigint;
    gen tsquery;  -- the candidate query: the words that are not in most chunks
    candidates integer;  -- at most this many chunks are scored (2,000 when every word is common)
    found bigint;
    counted boolean := false;
    common bigint;  -- a word in more chunks than this is common: it scores but makes no candidates
    mce text[];  -- ANALYZE's most common lexemes of chunk_rows.tsv and their frequencies
    mcf real[];
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
            IF allowed IS NOT NULL THEN  -- how many vectors the filter leaves (one row per document)
                SELECT coalesce(sum(vs.vector_count), 0), max(total_vectors.n) INTO reachable, total
                FROM (SELECT coalesce(sum(a.vector_count), 0) AS n FROM vector_sets a WHERE a.model = m) total_vectors
                LEFT JOIN vector_sets vs ON vs.model = m AND vs.document_id = ANY (allowed);
            END IF;
            IF allowed IS NOT NULL AND reachable <= coalesce(
                    (SELECT value::bigint FROM settings WHERE key = 'search_exact_limit'), 20000) THEN
                -- a selective filter: an exact scan
                SELECT coalesce(array_agg(s.chunk_id ORDER BY s.distance), '{}'),
                       coalesce(array_agg(1 - s.distance ORDER BY s.distance), '{}')
                INTO vec_ids, vec_sim
                FROM (SELECT v.chunk_id, v.embedding <=> query_vector AS distance FROM vectors v
                      WHERE v.model = m AND v.document_id = ANY (allowed)
                      ORDER BY v.embedding <=> query_vector LIMIT n) s;
            ELSE
                ef := greatest(n, coalesce((SELECT value::integer FROM settings WHERE key = 'hnsw_ef_search'), 40));
                IF allowed IS NOT NULL THEN
                    -- A filter passing a share s of the vectors keeps about s * ef_search of each pass of
                    -- the graph; ef_search / s keeps the first pass as wide, in allowed vectors, as an
                    -- unfiltered search (at ef_search alone a 30 % filter found 0.63 of the true top 10).
                    -- The iterative scan goes on past that pass until n allowed vectors are found.
                    ef := least(1000, ceil(ef * total::double precision / greatest(reachable, 1)))::integer;
                    PERFORM set_config('hnsw.iterative_scan', 'strict_order', true);
                    PERFORM set_config('hnsw.max_scan_tuples', '200000', true);
                END IF;
                PERFORM set_config('hnsw.ef_search', ef::text, true);
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

    -- the text side: rows of the sets serving now (or then) holding any query word, ranked by the sum
    -- of the inverse document frequencies of the words they hold (BM25's idf; PostgreSQL's ts_rank has
    -- none, so "permit" would weigh as much as "zx-5803-p"), ts_rank breaking ties. Words in more than
    -- 5 % of the chunks (and over 50) still score but do not make a chunk a candidate. A common word's
    -- frequency comes from ANALYZE's statistics (its most common lexemes); any other word makes
    -- candidates, so every chunk holding it is a candidate and its frequency is counted among them in
    -- the same pass (one visit of each candidate row, no query per word). Under a filter or as of a
    -- moment, and when the candidates reach their bound (stale or missing statistics), the words are
    -- counted through the GIN index over every serving chunk instead (up to "common").
    IF tq IS NOT NULL THEN  -- the question's words and their idf (the text side ranks, snippets weigh)
        SELECT coalesce(sum(vs.vector_count), 0) INTO total FROM vector_sets vs WHERE vs.model = m;
        common := greatest((0.05 * total)::bigint, 50);
        words := ARRAY(SELECT DISTINCT t.lexeme FROM unnest(to_tsvector('english'::regconfig, query)) t
                       WHERE strpos(t.lexeme, '\') = 0 ORDER BY t.lexeme);
        lex_q := ARRAY(SELECT quote_literal(w)::tsquery FROM unnest(words) WITH ORDINALITY u(w, o) ORDER BY u.o);
        IF mode = 'vector' THEN  -- only snippets weigh the words: no counting
            idf := array_fill(ln(1 + (total + 0.5) / 0.5), ARRAY[cardinality(words)]);
            rare := array_fill(false, ARRAY[cardinality(words)]);
        ELSE
            SELECT st.most_common_elems::text::text[], st.most_common_elem_freqs INTO mce, mcf FROM pg_stats st
            WHERE st.schemaname = current_schema() AND st.tablename = 'chunk_rows' AND st.attname = 'tsv';
            word_df := ARRAY(SELECT ceil(mcf[array_position(mce, u.w)] * total)::bigint
                             FROM unnest(words) WITH ORDINALITY u(w, o) ORDER BY u.o);
        END IF;
    END IF;
    IF mode <> 'vector' AND tq IS NOT NULL THEN
        counted := allowed IS NOT NULL OR at_position IS NOT NULL;  -- candidates are not every chunk then
        LOOP
            IF counted THEN  -- each word counted through the GIN index (up to "common")
                FOR i IN 1 .. cardinality(words) LOOP
                    IF word_df[i] IS NULL THEN
                        SELECT count(*) INTO df FROM (SELECT 1 FROM chunk_rows c
                                                      WHERE c.serving AND c.tsv @@ lex_q[i] LIMIT common + 1) x;
                        word_df[i] := df;
                    END IF;
                END LOOP;
            END IF;
            gen := NULL;
            FOR i IN 1 .. cardinality(words) LOOP
                IF word_df[i] IS NULL OR word_df[i] <= common THEN
                    gen := CASE WHEN gen IS NULL THEN lex_q[i] ELSE gen || lex_q[i] END;
                END IF;
            END LOOP;
            candidates := 20000;
            IF gen IS NULL THEN  -- every word is common: they all make candidates, fewer of them are scored
                gen := tq;
                candidates := 2000;
            END IF;
            WITH cand AS MATERIALIZED (
                SELECT c.chunk_id, c.tsv FROM chunk_rows c
                WHERE c.tsv @@ gen AND (allowed IS NULL OR c.document_id = ANY (allowed))
                  AND CASE WHEN at_position IS NULL THEN
                           c.serving AND EXISTS (SELECT 1 FROM vector_sets vs WHERE vs.document_id = c.document_id
                                                 AND vs.chunk_set_id = c.chunk_set_id AND vs.model = m)
                      ELSE c.chunk_id IN (SELECT v.chunk_id FROM vectors v
                                          WHERE v.model = m AND v.valid_from <= at_position
                                          UNION ALL
                                          SELECT h.chunk_id FROM vectors_history h
                                          WHERE h.model = m AND h.valid_from <= at_position AND h.valid_to > at_position)
                      END
                LIMIT candidates  -- bounds the work (exhaustive unless that many chunks match)
            ), hit AS MATERIALIZED (  -- which of the question's words each candidate holds
                SELECT cand.chunk_id, w.i FROM cand CROSS JOIN generate_subscripts(lex_q, 1) w(i)
                WHERE cand.tsv @@ lex_q[w.i]
            ), wt AS MATERIALIZED (
                SELECT w.i, f.df, ln(1 + (total - f.df + 0.5) / (f.df + 0.5)) AS idf,
                       words[w.i] ~ '[0-9]' AND f.df BETWEEN 1 AND 5 AS rare
                FROM generate_subscripts(lex_q, 1) w(i)
                CROSS JOIN LATERAL (SELECT coalesce(word_df[w.i], (SELECT count(*) FROM hit WHERE hit.i = w.i)) AS df) f
            ), scored AS (
                SELECT hit.chunk_id, sum(wt.idf) AS s, bool_or(wt.rare) AS x FROM hit JOIN wt ON wt.i = hit.i
                GROUP BY hit.chunk_id
            ), ranked AS (
                SELECT scored.chunk_id, scored.s + ts_rank(cand.tsv, tq) AS r, scored.x
                FROM scored JOIN cand ON cand.chunk_id = scored.chunk_id
                ORDER BY r DESC, scored.chunk_id LIMIT n
            )
            SELECT (SELECT count(*) FROM cand),
                   (SELECT coalesce(array_agg(ranked.chunk_id ORDER BY ranked.r DESC, ranked.chunk_id), '{}') FROM ranked),
                   (SELECT coalesce(array_agg(ranked.r ORDER BY ranked.r DESC, ranked.chunk_id), '{}') FROM ranked),
                   (SELECT coalesce(array_agg(ranked.x ORDER BY ranked.r DESC, ranked.chunk_id), '{}') FROM ranked),
                   (SELECT array_agg(wt.df ORDER BY wt.i) FROM wt),
                   (SELECT array_agg(wt.idf ORDER BY wt.i) FROM wt),
                   (SELECT array_agg(wt.rare ORDER BY wt.i) FROM wt)
            INTO found, txt_ids, txt_rank, txt_exact, counted_df, idf, rare;
            EXIT WHEN found < candidates OR counted;
            counted := true;  -- the bound cut the candidates: their counts are not the words' frequencies
        END LOOP;
    END IF;
    IF lex_q IS NULL THEN
        lex_q := '{}';
    END IF;

    RETURN QUERY
    WITH vr AS (
        SELECT t.id, t.rank::integer AS rank, vec_sim[t.rank] AS sim FROM unnest(vec_ids) WITH ORDINALITY AS t(id, rank)
    ), tr AS (
        SELECT t.id, t.rank::integer AS rank, txt_rank[t.rank] AS r, txt_exact[t.rank] AS x
        FROM unnest(txt_ids) WITH ORDINALITY AS t(id, rank)
    ), fused AS (
        -- RRF (k = 60); a chunk holding an identifier or figure of the question that few chunks hold
        -- counts its text rank twice: an exact code is stronger evidence than any similarity.
        SELECT coalesce(vr.id, tr.id) AS id, vr.rank AS vrank, tr.rank AS trank, vr.sim, tr.r,
               CASE mode WHEN 'vector' THEN vr.sim
                         WHEN 'text' THEN tr.r
                         ELSE coalesce(1.0 / (60 + vr.rank), 0)
                              + coalesce((1 + coalesce(tr.x, false)::integer) * 1.0 / (60 + tr.rank), 0) END AS fused_score
        FROM vr FULL JOIN tr ON tr.id = vr.id
        ORDER BY fused_score DESC, coalesce(vr.rank, 1000000), coalesce(tr.rank, 1000000)
        LIMIT k
    )
    SELECT c.chunk_id, c.document_id, doc.filename, nullif(c.title, ''), c.ordinal, c.text, c.pages, c.heading_path,
           c.char_start, c.char_end, f.fused_score, f.sim, f.vrank, f.trank,
           chronos_snippet(c.text, lex_q, idf, tq)
    FROM fused f
    JOIN chunk_rows c ON c.chunk_id = f.id
    JOIN documents doc ON doc.document_id = c.document_id
    WHERE doc.status <> 'deleted' OR at_position IS NOT NULL
    ORDER BY f.fused_score DESC, coalesce(f.vrank, 1000000), coalesce(f.trank, 1000000);
END;
$$;
