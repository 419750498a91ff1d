-- `chunks` (a public name): the chunks search answers from now -- the rows of every document's serving
-- chunk set(s). chunk_rows also keeps the sets that served before (search as of a past moment reads
-- them). Idempotent; re-created after a replay swaps chunk_rows in.
DROP VIEW IF EXISTS chunks CASCADE;
CREATE VIEW chunks AS
SELECT chunk_id, document_id, chunk_set_id, ordinal, text, text_sha256, pages, heading_path, char_start,
       char_end, token_count, title, context, embed_sha256
FROM chunk_rows WHERE serving;
