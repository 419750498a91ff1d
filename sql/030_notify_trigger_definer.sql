-- The events trigger notifies for foreign writers (a psql session, a script) through pg_notify(), and
-- sql/views/090_analyst_role.sql revokes pg_notify() from PUBLIC so that analysts cannot wake (or
-- flood) the listeners with it. The trigger function therefore runs as its owner -- the service's
-- role, which keeps EXECUTE on pg_notify() -- whatever role inserted the row, with a fixed
-- search_path (this schema, then pg_temp) so the inserting role cannot redirect what it calls.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION events_notify_v2() SECURITY DEFINER SET search_path = %I, pg_temp',
                   current_schema());
END;
$$;
