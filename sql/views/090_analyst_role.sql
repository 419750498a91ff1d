-- chronos_analyst: a NOLOGIN role analysts are granted (GRANT chronos_analyst TO alice). It reads
-- the projections, the analyst views and the event log; it cannot write anything and cannot read
-- the raw blob store (blobs, blob_chunks, blob_uploads) nor the job queue.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chronos_analyst') THEN
        CREATE ROLE chronos_analyst NOLOGIN;
    END IF;
END;
$$;
GRANT USAGE ON SCHEMA public TO chronos_analyst;
GRANT SELECT ON documents, chunks, chunk_rows, vectors, vectors_history, cost_ledger, chunk_sets, vector_sets,
    embedding_models, settings, events, v_documents, v_stage_events, v_stage_latency_daily, v_cost_daily,
    v_cost_by_document, v_budget_month, v_failures, v_search_models TO chronos_analyst;
REVOKE ALL ON blobs, blob_chunks, blob_uploads FROM chronos_analyst;
GRANT EXECUTE ON FUNCTION search_chunks(vector, integer, text) TO chronos_analyst;
GRANT EXECUTE ON FUNCTION search_chunks_as_of(vector, integer, text, bigint) TO chronos_analyst;
