-- Analyst roles limited to some collections (issue 15; docs/sql.md "Analysts and collections").
-- A role with rows here -- or a member of such a role -- sees in the projections, the event log and every
-- analyst view only the rows of these collections (row-level security, sql/views/090_analyst_role.sql);
-- a role with none (chronos_analyst itself) sees every row. Managed by `chronos analysts grant|revoke|list`.
-- Not a projection: like the roles and GRANTs it complements, access control lives in the database
-- (replay neither reads nor rebuilds it).
CREATE TABLE analyst_collections (
    role_name  name        NOT NULL,
    collection text        NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    granted_by name        NOT NULL DEFAULT current_user,
    PRIMARY KEY (role_name, collection)
);
REVOKE ALL ON analyst_collections FROM PUBLIC;
