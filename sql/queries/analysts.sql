-- Analyst roles limited to collections (app/services/analysts.py; migration 085).

-- name: role
SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1;

-- name: is_member
SELECT pg_has_role($1::name, $2::name, 'MEMBER');

-- name: grant
INSERT INTO analyst_collections (role_name, collection) VALUES ($1, $2) ON CONFLICT DO NOTHING;

-- name: revoke
DELETE FROM analyst_collections WHERE role_name = $1 AND collection = ANY ($2::text[]);

-- name: of_role
SELECT array_agg(collection ORDER BY collection) FROM analyst_collections WHERE role_name = $1;

-- name: list
SELECT a.role_name, array_agg(a.collection ORDER BY a.collection) AS collections,
       EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = a.role_name) AS exists
FROM analyst_collections a GROUP BY a.role_name ORDER BY a.role_name;
