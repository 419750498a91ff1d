-- Under a filter, search_chunks_hybrid() reads the allowed vectors exactly when there are at most this
-- many (the true top-k, and cheaper than walking the HNSW graph past every vector the filter refuses);
-- above it, an HNSW iterative scan (docs/search.md). Measured by `chronos bench search`.
INSERT INTO settings (key, value) VALUES ('search_exact_limit', '20000') ON CONFLICT (key) DO NOTHING;
