-- The documents projection persists the whole DocumentState (app/catalogue/state.py): the columns,
-- plus in `state` what folding needs to go on from a row (sticky request settings, which chunk sets
-- have vectors for which model, the chunk set search serves). Rows written before this have no such
-- extras, so the projection is rebuilt from the log: its checkpoint goes back to the start and the
-- running projector (or the next `chronos worker` / `serve`) refills the table. No model, Modal or
-- OpenAI call is made: the documents projection reads the log only.
ALTER TABLE documents ADD COLUMN state jsonb NOT NULL DEFAULT '{}';
DELETE FROM documents;
UPDATE subscriptions SET tx_id = '0'::xid8, position = 0, updated_at = now() WHERE name = 'projection:documents';
