-- Workers look up the models of an embedding switch (`embedding_switch_targets`) on every embed job:
-- a small partial index instead of a scan of the whole log.
CREATE INDEX events_embedding_requests_idx ON events (position) WHERE type = 'EmbeddingRequested';
