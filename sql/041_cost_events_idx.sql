-- Budget alerts (app/alerts/crossing.py) sum a month's CostIncurred events from the log -- the truth,
-- which the cost_ledger projection may trail -- after every batch of new costs: a partial index on
-- the cost events' time instead of a scan of every event.
CREATE INDEX events_cost_recorded_at_idx ON events (recorded_at) WHERE type = 'CostIncurred';
