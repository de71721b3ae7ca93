-- One schema per function, each owned by a role of the same name that has rights on
-- its own schema only: a function connects as (or SETs ROLE to) its role, so it cannot
-- read or write another function's tables. Every schema has its idempotency inbox
-- (eventing/inbox.py): one row per delivered event, keyed by (source, id).
-- depends:

DO $migration$
DECLARE
  fn text;
BEGIN
  FOREACH fn IN ARRAY ARRAY['parse_comment', 'identity', 'signing', 'verify', 'todo', 'accounting']
  LOOP
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = fn) THEN
      EXECUTE format('CREATE ROLE %I LOGIN', fn);
    END IF;
    -- The migrating user may SET ROLE to each function role (for a shared login URL).
    EXECUTE format('GRANT %I TO CURRENT_USER', fn);
    EXECUTE format('CREATE SCHEMA %I AUTHORIZATION %I', fn, fn);
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', fn);
    EXECUTE format($ddl$
      CREATE TABLE %I.inbox (
        source      text        NOT NULL,
        id          text        NOT NULL,
        digest      bytea       NOT NULL,
        status      smallint,
        reply       json,   -- json, not jsonb: a redelivery gets the same bytes
        received_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (source, id)
      )$ddl$, fn);
    EXECUTE format('ALTER TABLE %I.inbox OWNER TO %I', fn, fn);
  END LOOP;
END
$migration$;
