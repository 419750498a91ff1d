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
LANGUAGE sql STABLE PARALLEL SAFE
-- its one plan serves every call: search_chunks_hybrid's force_custom_plan would re-plan it for each hit
SET plan_cache_mode = auto
AS $$
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

-- BM25's inverse document frequency of a word `df` of `total` chunks hold (one definition for the text
-- side's passes, its stopping bound and the snippets' weights; inlined by the planner).
DROP FUNCTION IF EXISTS chronos_idf(double precision, double precision);
CREATE FUNCTION chronos_idf(total double precision, df double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ln(1 + (total - df + 0.5) / (df + 0.5));
$$;

-- One pass of the text side: the chunks holding any word of `q` (through the GIN index), of the sets
-- serving now (at_position NULL) or then, of `model`, of the `allowed` documents (NULL: all), at most
-- `lim` of them; for each, the sum of the idf of the question's words (`lexes`) it holds, and whether
-- it holds an identifier or figure (a word with a digit) that at most 5 chunks hold, and the most its
-- final score can be (`caps`: the idf sum plus the share of the words it holds, which bounds ts_rank's
-- average over the question's words of at most 1 each). `dfs`: how many
-- chunks hold each word; a NULL one is counted among this pass's candidates (the caller makes sure
-- every chunk holding it is one) and returned in `counted`. Only the candidates whose cap reaches `floor`
-- (the n-th best idf sum of the passes before; NULL: none yet) are returned: no other can reach the
-- top n. The statement is made for the question:
-- its words are constants and each candidate's score is summed inline (no subquery per row: that
-- cost ~10 us a candidate).
DROP FUNCTION IF EXISTS chronos_text_pass(text[], bigint[], tsquery, double precision, text, uuid[], bigint, integer,
                                           double precision);
CREATE FUNCTION chronos_text_pass(
    lexes text[], dfs bigint[], q tsquery, total double precision, model text, allowed uuid[], at_position bigint,
    lim integer, floor double precision, OUT ids uuid[], OUT scores double precision[], OUT caps double precision[], OUT exact boolean[],
    OUT counted bigint[], OUT read integer)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    hits text;
    held text;
    counts text;
    weighs text;
    score text;
    x text;
    matched text;
    searchable text;
    scan text;
BEGIN
    SELECT string_agg(format('c.tsv @@ %L::tsquery AS h%s', quote_literal(lexes[i]), i), ', ' ORDER BY i),
           string_agg(format('m.h%s', i), ', ' ORDER BY i),
           string_agg(CASE WHEN dfs[i] IS NULL THEN format('count(*) FILTER (WHERE m.h%s)', i)
                           ELSE format('%s::bigint', dfs[i]) END || format(' AS d%s', i), ', ' ORDER BY i),
           string_agg(format('chronos_idf(%1$s, d.d%2$s) AS i%2$s', total, i),
                      ', ' ORDER BY i),
           string_agg(format('CASE WHEN m.h%1$s THEN w.i%1$s ELSE 0 END', i), ' + ' ORDER BY i),
           string_agg(format('(m.h%1$s AND d.d%1$s BETWEEN 1 AND 5)', i), ' OR ' ORDER BY i)
               FILTER (WHERE lexes[i] ~ '[0-9]'),
           format('(%s)::double precision / %s', string_agg(format('m.h%s::integer', i), ' + ' ORDER BY i), count(*))
    INTO hits, held, counts, weighs, score, x, matched
    FROM generate_subscripts(lexes, 1) i;
    searchable := CASE WHEN at_position IS NULL THEN
        'EXISTS (SELECT 1 FROM vector_sets vs WHERE vs.document_id = m.document_id
                               AND vs.chunk_set_id = m.chunk_set_id AND vs.model = $4)'
    ELSE
        'm.chunk_id IN (SELECT v.chunk_id FROM vectors v WHERE v.model = $4 AND v.valid_from <= $5
                        UNION ALL
                        SELECT h.chunk_id FROM vectors_history h
                        WHERE h.model = $4 AND h.valid_from <= $5 AND h.valid_to > $5)'
    END;
    scan := format(
        'SELECT m.chunk_id, %1$s FROM (  -- OFFSET 0: the GIN index drives, not a join
             SELECT c.chunk_id, c.document_id, c.chunk_set_id, %2$s FROM chunk_rows c
             WHERE c.tsv @@ $1 AND ($2::uuid[] IS NULL OR c.document_id = ANY ($2))
               AND (c.serving OR $5::bigint IS NOT NULL)
             OFFSET 0) m
         WHERE %3$s
         LIMIT $3  -- bounds the work (exhaustive unless that many chunks match)
        ', held, hits, searchable);
    IF array_position(dfs, NULL) IS NULL THEN  -- every count known: the weights are constants
        SELECT string_agg(format('CASE WHEN m.h%s THEN %s::double precision ELSE 0 END', i,
                                 chronos_idf(total, dfs[i])), ' + ' ORDER BY i),
               string_agg(format('m.h%s', i), ' OR ' ORDER BY i) FILTER (WHERE lexes[i] ~ '[0-9]' AND dfs[i] BETWEEN 1 AND 5)
        INTO score, x
        FROM generate_subscripts(lexes, 1) i;
        EXECUTE format(
            'SELECT coalesce(array_agg(m.chunk_id) FILTER (WHERE m.keep), ''{}''),
                    coalesce(array_agg(m.s) FILTER (WHERE m.keep), ''{}''),
                    coalesce(array_agg(m.cap) FILTER (WHERE m.keep), ''{}''),
                    coalesce(array_agg(m.x) FILTER (WHERE m.keep), ''{}''), $6::bigint[], count(*)
             FROM (SELECT m.chunk_id, m.s, m.cap, m.x, $7::double precision IS NULL OR m.cap >= $7 AS keep
                   FROM (SELECT m.chunk_id, %2$s AS s, %2$s + %3$s AS cap, %4$s AS x FROM (%1$s) m OFFSET 0) m) m',
            scan, score, matched, coalesce(x, 'false'))
        INTO ids, scores, caps, exact, counted, read
        USING q, allowed, lim, model, at_position, dfs, floor;
        RETURN;
    END IF;
    EXECUTE format(
        'WITH m AS MATERIALIZED (  -- the candidates and which words each holds
             %1$s
         ), d AS MATERIALIZED (  -- one row (an aggregate even when every count is known)
             SELECT count(*) AS n, %2$s FROM m
         ), w AS MATERIALIZED (
             SELECT %3$s FROM d
         )
         SELECT coalesce(array_agg(m.chunk_id) FILTER (WHERE m.keep), ''{}''),
                coalesce(array_agg(m.s) FILTER (WHERE m.keep), ''{}''),
                coalesce(array_agg(m.cap) FILTER (WHERE m.keep), ''{}''),
                coalesce(array_agg(m.x) FILTER (WHERE m.keep), ''{}''), (SELECT ARRAY[%6$s] FROM d), count(*)
         FROM (SELECT m.chunk_id, m.s, m.cap, m.x, $6::double precision IS NULL OR m.cap >= $6 AS keep
               FROM (SELECT m.chunk_id, %4$s AS s, %4$s + %7$s AS cap, %5$s AS x FROM m, d, w OFFSET 0) m) m',
        scan, counts, weighs, score, coalesce(x, 'false'),
        (SELECT string_agg(format('d.d%s', i), ', ' ORDER BY i) FROM generate_subscripts(lexes, 1) i), matched)
    INTO ids, scores, caps, exact, counted, read
    USING q, allowed, lim, model, at_position, floor;
END;
$$;

-- mode: 'hybrid' (default), 'vector' or 'text'. query_vector may be NULL in text mode. model NULL: the
-- active model. at_position: the chunks that served at that log position (NULL: now). Filters (NULL:
-- none): document ids, filename LIKE pattern (case-insensitive), media types, sources, upload range,
-- collections (an empty array: none), metadata objects that must all be contained (jsonb @>).
-- Under a filter the vector side is an exact scan when the filter leaves at most settings
-- 'search_exact_limit' vectors (counted from vector_sets, one row per document), else an HNSW
-- iterative scan (pgvector 0.8, strict order, ef_search widened by the filter's share).
-- The HNSW statement is dynamic (EXECUTE), so it is planned for its values on every call: a generic
-- plan cannot use a model's partial expression index and would scan every vector. The static
-- statements (bookkeeping, and the exact scans, which want no index) keep their cached plans:
-- re-planning each of them on every call (force_custom_plan) cost ~2 ms a search.
-- score: RRF (hybrid), cosine similarity (vector), ts_rank (text).
DROP FUNCTION IF EXISTS search_chunks_hybrid(text, vector, integer, text, text, bigint, uuid[], text, text[], text[],
                                              timestamptz, timestamptz);
DROP FUNCTION IF EXISTS search_chunks_hybrid(text, vector, integer, text, text, bigint, uuid[], text, text[], text[],
                                              timestamptz, timestamptz, text[], jsonb[]);
CREATE FUNCTION search_chunks_hybrid(
    query text, query_vector vector, k integer DEFAULT 5, model text DEFAULT NULL, mode text DEFAULT 'hybrid',
    at_position bigint DEFAULT NULL, document_ids uuid[] DEFAULT NULL, filename_like text DEFAULT NULL,
    media_types text[] DEFAULT NULL, sources text[] DEFAULT NULL, uploaded_from timestamptz DEFAULT NULL,
    uploaded_to timestamptz DEFAULT NULL, collections text[] DEFAULT NULL, metadata_filters jsonb[] DEFAULT NULL)
RETURNS TABLE (chunk_id uuid, document_id uuid, filename text, title text, ordinal integer, text text,
               pages integer[], heading_path text[], char_start integer, char_end integer, score double precision,
               similarity double precision, vector_rank integer, text_rank integer, snippet text,
               collection text, metadata jsonb)
LANGUAGE plpgsql
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
                        OR sources IS NOT NULL OR uploaded_from IS NOT NULL OR uploaded_to IS NOT NULL
                        OR collections IS NOT NULL OR metadata_filters IS NOT NULL;
    vec_ids uuid[] := '{}';
    vec_sim double precision[] := '{}';
    txt_ids uuid[] := '{}';
    txt_rank double precision[] := '{}';
    txt_exact boolean[] := '{}';
    reachable bigint;
    total bigint;
    lex text;
    lexes text[] := '{}';
    lex_q tsquery[] := '{}';
    dfs bigint[] := '{}';  -- chunks holding each word (NULL: counted in the first pass)
    idf double precision[] := '{}';
    df bigint;
    trusted boolean := false;  -- ANALYZE's statistics say which words are common
    order_ integer[];  -- the words that make candidates, in the order they are read
    upto integer;  -- the passes read the words order_[1:upto]
    done integer;
    newq tsquery;
    seen tsquery;  -- the words read so far
    p_ids uuid[];
    p_s double precision[];
    p_cap double precision[];
    p_x boolean[];
    all_ids uuid[] := '{}';
    all_s double precision[] := '{}';
    all_cap double precision[] := '{}';
    all_x boolean[] := '{}';
    theta double precision;  -- the n-th best idf sum of the passes so far
    read integer := 0;  -- candidates the passes read
    p_read integer;
    candidates integer := 20000;  -- at most this many chunks are scored
    common bigint;  -- a word in more chunks than this is common: it scores but makes no candidates
    mce text[];  -- ANALYZE's most common lexemes of chunk_rows.tsv and their frequencies
    mcf real[];
    at integer;
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
          AND (uploaded_to IS NULL OR doc.uploaded_at < uploaded_to)
          AND (collections IS NULL OR doc.collection = ANY (collections))
          -- every object contained in the metadata; the first one alone lets the GIN index answer
          AND (coalesce(cardinality(metadata_filters), 0) = 0 OR doc.metadata @> metadata_filters[1])
          AND (metadata_filters IS NULL OR doc.metadata @> ALL (metadata_filters));
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
    -- 5 % of the chunks (and over 50) still score but do not make a chunk a candidate; which words are
    -- common, and how common, comes from ANALYZE's statistics (a word not among its most common lexemes
    -- is rarer than the least common of them, and is counted in the first pass, not beforehand).
    -- The candidates are read from the heap (~1.5 us a row, most of the cost), so they are read by
    -- MaxScore: the rarest words' chunks first, one more word per pass, until the n-th best idf sum so
    -- far is at least what a chunk holding none of the words read so far could reach (the sum of the
    -- other words' idf, plus 1 for ts_rank). The top n is then exact, from fewer rows.
    -- ts_rank (at most 1) is added only for the candidates whose idf sum comes within 1 of the n-th
    -- best, the only ones that can still reach the top n.
    IF tq IS NOT NULL THEN  -- the question's words and how many chunks hold them
        SELECT coalesce(sum(vs.vector_count), 0) INTO total FROM vector_sets vs WHERE vs.model = m;
        common := greatest((0.05 * total)::bigint, 50);
        IF mode <> 'vector' THEN
            SELECT st.most_common_elems::text::text[], st.most_common_elem_freqs INTO mce, mcf FROM pg_stats st
            WHERE st.schemaname = current_schema() AND st.tablename = 'chunk_rows' AND st.attname = 'tsv';
            -- most_common_elem_freqs: the lexemes' frequencies, then their minimum, maximum and nulls' share.
            -- Counted in the first pass only unfiltered and now: a filtered pass would count the filter's.
            trusted := mce IS NOT NULL AND mcf[cardinality(mce) + 1] * total <= common
                       AND allowed IS NULL AND at_position IS NULL;
        END IF;
        FOR lex IN SELECT DISTINCT t.lexeme FROM unnest(to_tsvector('english'::regconfig, query)) t
                   WHERE strpos(t.lexeme, '\') = 0 LOOP
            at := array_position(mce, lex);
            IF mode = 'vector' THEN  -- only snippets weigh the words: no counting
                df := 0;
            ELSIF at IS NOT NULL THEN  -- a common lexeme: its frequency from the statistics
                df := ceil(mcf[at] * total);
            ELSIF trusted THEN  -- rarer than any common one: counted in the first pass
                df := NULL;
            ELSE  -- counted up to "common": beyond it the exact count changes little and costs much
                SELECT count(*) INTO df FROM (SELECT 1 FROM chunk_rows c
                                              WHERE c.serving AND c.tsv @@ quote_literal(lex)::tsquery
                                              LIMIT common + 1) x;
            END IF;
            lexes := lexes || lex;
            lex_q := lex_q || quote_literal(lex)::tsquery;
            dfs := dfs || df;
        END LOOP;
    END IF;
    IF mode <> 'vector' AND tq IS NOT NULL THEN
        -- the words that make candidates, the uncounted (rarest) first, then by how many chunks hold them
        SELECT coalesce(array_agg(i ORDER BY coalesce(dfs[i], -1), i), '{}') INTO order_ FROM generate_subscripts(lexes, 1) i
        WHERE dfs[i] IS NULL OR dfs[i] <= common;
        IF cardinality(order_) = 0 THEN  -- every word is common: one pass over fewer of their chunks
            SELECT * INTO p_ids, p_s, p_cap, p_x, dfs, p_read
            FROM chronos_text_pass(lexes, dfs, tq, total, m, allowed, at_position, 2000, NULL);
            all_ids := p_ids; all_s := p_s; all_cap := p_cap; all_x := p_x;
        ELSE
            upto := greatest(1, (SELECT count(*) FROM unnest(order_) i WHERE dfs[i] IS NULL)::integer);
            done := 0;
            LOOP
                newq := (SELECT string_agg(quote_literal(lexes[order_[j]]), ' | ')::tsquery FROM generate_series(done + 1, upto) j);
                SELECT * INTO p_ids, p_s, p_cap, p_x, dfs, p_read
                FROM chronos_text_pass(lexes, dfs, CASE WHEN seen IS NULL THEN newq ELSE newq && !!seen END, total, m,
                                       allowed, at_position, candidates - read, theta);
                read := read + p_read;
                all_ids := all_ids || p_ids; all_s := all_s || p_s; all_cap := all_cap || p_cap; all_x := all_x || p_x;
                seen := CASE WHEN seen IS NULL THEN newq ELSE seen || newq END;
                done := upto;
                EXIT WHEN done >= cardinality(order_) OR read >= candidates;
                -- the n-th best so far against the most a chunk holding none of the words read can reach:
                -- the other words' idf, and ts_rank's share of them
                theta := (SELECT u.s FROM unnest(all_s) u(s) ORDER BY u.s DESC OFFSET n - 1 LIMIT 1);
                EXIT WHEN theta >= (SELECT coalesce(sum(chronos_idf(total, dfs[i])), 0)
                                           + count(*)::double precision / cardinality(lexes)
                                    FROM generate_subscripts(lexes, 1) i WHERE i <> ALL (order_[1:done]));
                upto := done + 1;
            END LOOP;
        END IF;
        -- ts_rank for the n best idf sums; then for the other candidates whose cap reaches the n-th best
        -- score among those (no other can enter the top n)
        WITH c AS (
            SELECT u.id, u.s, u.cap, u.x FROM unnest(all_ids, all_s, all_cap, all_x) u(id, s, cap, x)
        ), top AS MATERIALIZED (
            SELECT c.id, c.s + t.rank AS r, c.x
            FROM (SELECT c.* FROM c ORDER BY c.s DESC, c.id LIMIT n) c
            CROSS JOIN LATERAL (SELECT ts_rank(r.tsv, tq) AS rank FROM chunk_rows r WHERE r.chunk_id = c.id) t
        ), bar AS (
            SELECT coalesce((SELECT top.r FROM top ORDER BY top.r DESC OFFSET n - 1 LIMIT 1), 0) AS r
        ), ranked AS (
            SELECT top.id, top.r, top.x FROM top
            UNION ALL
            SELECT c.id, c.s + t.rank, c.x
            FROM c CROSS JOIN LATERAL (SELECT ts_rank(r.tsv, tq) AS rank FROM chunk_rows r WHERE r.chunk_id = c.id) t
            WHERE c.cap >= (SELECT bar.r FROM bar) AND c.id NOT IN (SELECT top.id FROM top)
            ORDER BY 2 DESC, 1 LIMIT n
        )
        SELECT coalesce(array_agg(ranked.id ORDER BY ranked.r DESC, ranked.id), '{}'),
               coalesce(array_agg(ranked.r ORDER BY ranked.r DESC, ranked.id), '{}'),
               coalesce(array_agg(ranked.x ORDER BY ranked.r DESC, ranked.id), '{}')
        INTO txt_ids, txt_rank, txt_exact FROM ranked;
    END IF;
    IF tq IS NOT NULL THEN  -- the words' weights, for the snippets
        idf := (SELECT coalesce(array_agg(chronos_idf(total, u.d) ORDER BY u.i), '{}')
                FROM unnest(dfs) WITH ORDINALITY AS u(d, i));
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
           chronos_snippet(c.text, lex_q, idf, tq), doc.collection, doc.metadata
    FROM fused f
    JOIN chunk_rows c ON c.chunk_id = f.id
    JOIN documents doc ON doc.document_id = c.document_id
    WHERE doc.status <> 'deleted' OR at_position IS NOT NULL
    ORDER BY f.fused_score DESC, coalesce(f.vrank, 1000000), coalesce(f.trank, 1000000);
END;
$$;
