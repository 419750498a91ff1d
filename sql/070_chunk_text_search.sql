-- Hybrid search (issue 14): each chunk row carries its context (document title, heading path, and for
-- a table chunk its header row) and a tsvector of that context and its text, GIN-indexed. The index
-- projection writes the context with the chunk rows, so replay rebuilds both and they switch with the
-- chunk set (the `serving` flag) in the same transaction as the vectors.
--
-- `english`: stop words out, stems in (founded ~ founding), while numbers, decimals and codes stay whole
-- lexemes ("1911", "8.8", "chronos-495" and its parts "chronos", "495"). Context weighs B, text A.
-- Rows written before this migration have an empty context (their tsvector is of the text alone) until
-- the document is re-chunked or the index projection is replayed.
ALTER TABLE chunk_rows ADD COLUMN title text NOT NULL DEFAULT '';
ALTER TABLE chunk_rows ADD COLUMN embed_sha256 text;  -- what was embedded (context + text); NULL: the text
ALTER TABLE chunk_rows ADD COLUMN context text NOT NULL DEFAULT '';
ALTER TABLE chunk_rows ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english'::regconfig, context), 'B') || setweight(to_tsvector('english'::regconfig, text), 'A')
) STORED;
CREATE INDEX chunk_rows_tsv_idx ON chunk_rows USING gin (tsv);
