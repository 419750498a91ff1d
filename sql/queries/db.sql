-- name: revoke_public_temp
-- At every start-up, under the migrations' lock (app/db.py): PUBLIC's TEMP privilege on this database
-- (temp tables, and functions in pg_temp) lives in the shared catalogue pg_database, which CREATE
-- DATABASE ... TEMPLATE does not copy, so a migrated template's clone has it again.
SELECT chronos_revoke_public_temp();

-- name: migrations_xact_lock
-- The lock events/migrations.py holds for the session while migrating, taken for one transaction.
SELECT pg_advisory_xact_lock($1);
