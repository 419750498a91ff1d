-- The analyst role (090_analyst_role.sql) reads the collections views and projection too. Row-level
-- security per collection for roles granted only some collections is added on top (isolation, 085–089).
GRANT SELECT ON collections, v_chunks, v_collections TO chronos_analyst;
