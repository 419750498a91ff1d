-- HNSW parameters measured by `chronos bench search` (100k x 384, clustered, 2 cores):
-- m=16/ef_construction=64 reached recall@10 0.87 (ef_search 100) / 0.91 (200);
-- m=24/ef_construction=128 reached 0.989 at ef_search 200 (p50 9.8 ms) and 1.0 at 400 (p50 8.1 ms).
-- Applies to indexes created from now on (existing ones: REINDEX or chronos replay).
UPDATE settings SET value = '24', updated_at = now() WHERE key = 'hnsw_m';
UPDATE settings SET value = '128', updated_at = now() WHERE key = 'hnsw_ef_construction';
UPDATE settings SET value = '200', updated_at = now() WHERE key = 'hnsw_ef_search';
