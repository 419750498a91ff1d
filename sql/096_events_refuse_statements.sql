-- The append-only refusal also as a statement trigger. With row-level security on `events`
-- (sql/views/099_analyst_collections.sql) a role no SELECT policy lets see a row has an UPDATE or
-- DELETE that matches no row, so the row trigger of 001 never fires: the statement changed nothing
-- but said nothing either. Refused per statement, it fails loudly whatever rows the role can see.
CREATE TRIGGER events_no_update_delete_statement
    BEFORE UPDATE OR DELETE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();
