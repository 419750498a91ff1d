-- The notify trigger without a transition table: `REFERENCING NEW TABLE` made every INSERT copy its
-- rows into a tuplestore even for the application's own connections (which notify themselves,
-- coalesced, and skip the trigger). The WHEN clause now skips the function call altogether for them,
-- and foreign writers' payload is the statement's last position: currval of the identity sequence,
-- which for a multi-row INSERT is its highest position.
DROP TRIGGER events_notify ON events;

CREATE FUNCTION events_notify_v2() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('chronos_events', currval(pg_get_serial_sequence('events', 'position'))::text);
    RETURN NULL;
EXCEPTION WHEN object_not_in_prerequisite_state THEN  -- an INSERT of zero rows: no nextval this session
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_notify
    AFTER INSERT ON events
    FOR EACH STATEMENT
    WHEN (coalesce(current_setting('chronos.app_notifier', true), '') <> 'on')
    EXECUTE FUNCTION events_notify_v2();

DROP FUNCTION events_notify_v1();
