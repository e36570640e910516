-- Vivier database provisioning: one database, one login role per service, one schema per service
-- owned by that role. Nobody else gets rights on a schema, so a service reading another's tables
-- fails with "permission denied". The same statements as tools/dev-stack/src/database.ts (npm start);
-- safe to run again (it updates the passwords).
--
-- Run as a superuser (or a role with CREATEDB and CREATEROLE), with psql:
--   psql -X -v ON_ERROR_STOP=1 \
--     -v auth_password="$AUTH_DB_PASSWORD" -v chat_password="$CHAT_DB_PASSWORD" \
--     -v admin_password="$ADMIN_DB_PASSWORD" -v worker_password="$WORKER_DB_PASSWORD" \
--     [-v db=vivier] [-v auth_role=auth_svc ...] -f infra/postgres/provision.sql "$ADMIN_DATABASE_URL"
--
-- Variables: db (default vivier); <service>_password (required, one per service);
-- <service>_role (default <service>_svc). The schema names (auth, chat, admin, worker) are fixed:
-- the migrations name them.
\set ON_ERROR_STOP on

\if :{?db}
\else
  \set db vivier
\endif
\if :{?auth_role}
\else
  \set auth_role auth_svc
\endif
\if :{?chat_role}
\else
  \set chat_role chat_svc
\endif
\if :{?admin_role}
\else
  \set admin_role admin_svc
\endif
\if :{?worker_role}
\else
  \set worker_role worker_svc
\endif
\if :{?auth_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'provision.sql: set -v auth_password=...'; END $$;
\endif
\if :{?chat_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'provision.sql: set -v chat_password=...'; END $$;
\endif
\if :{?admin_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'provision.sql: set -v admin_password=...'; END $$;
\endif
\if :{?worker_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'provision.sql: set -v worker_password=...'; END $$;
\endif

-- The database and the roles (cluster-wide).
SELECT format('CREATE DATABASE %I', :'db')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec

SELECT format('CREATE ROLE %I', :'auth_role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'auth_role') \gexec
SELECT format('CREATE ROLE %I', :'chat_role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'chat_role') \gexec
SELECT format('CREATE ROLE %I', :'admin_role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'admin_role') \gexec
SELECT format('CREATE ROLE %I', :'worker_role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'worker_role') \gexec

-- Service roles log in, and can do nothing else beyond their own schema.
ALTER ROLE :"auth_role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'auth_password';
ALTER ROLE :"chat_role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'chat_password';
ALTER ROLE :"admin_role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'admin_password';
ALTER ROLE :"worker_role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'worker_password';

-- Inside the database: no rights for PUBLIC, one schema per service owned by its role.
\connect :"db"
\set ON_ERROR_STOP on

REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
REVOKE ALL ON SCHEMA public FROM PUBLIC;

GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"auth_role";
CREATE SCHEMA IF NOT EXISTS auth AUTHORIZATION :"auth_role";
ALTER SCHEMA auth OWNER TO :"auth_role";
ALTER ROLE :"auth_role" IN DATABASE :"db" SET search_path = auth;

GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"chat_role";
CREATE SCHEMA IF NOT EXISTS chat AUTHORIZATION :"chat_role";
ALTER SCHEMA chat OWNER TO :"chat_role";
ALTER ROLE :"chat_role" IN DATABASE :"db" SET search_path = chat;

GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"admin_role";
CREATE SCHEMA IF NOT EXISTS admin AUTHORIZATION :"admin_role";
ALTER SCHEMA admin OWNER TO :"admin_role";
ALTER ROLE :"admin_role" IN DATABASE :"db" SET search_path = admin;

GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"worker_role";
CREATE SCHEMA IF NOT EXISTS worker AUTHORIZATION :"worker_role";
ALTER SCHEMA worker OWNER TO :"worker_role";
ALTER ROLE :"worker_role" IN DATABASE :"db" SET search_path = worker;
