-- Every function schema gets an outbox (eventing/outbox.py): facts written in the same
-- transaction as the change they report, relayed to the broker (K_SINK) afterwards.
-- `seq` orders them; `published_at` is set once the sink answered 2xx.
-- depends: 0004.batch-tx-requests

DO $migration$
DECLARE
  fn text;
BEGIN
  FOREACH fn IN ARRAY ARRAY['parse_comment', 'identity', 'signing', 'verify', 'todo', 'accounting']
  LOOP
    EXECUTE format($ddl$
      CREATE TABLE %I.outbox (
        seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id           text        NOT NULL UNIQUE,
        attributes   jsonb       NOT NULL,
        data         jsonb       NOT NULL,
        created_at   timestamptz NOT NULL DEFAULT now(),
        published_at timestamptz
      )$ddl$, fn);
    EXECUTE format('CREATE INDEX ON %I.outbox (seq) WHERE published_at IS NULL', fn);
    EXECUTE format('ALTER TABLE %I.outbox OWNER TO %I', fn, fn);
  END LOOP;
END
$migration$;
