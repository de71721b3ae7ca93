-- The batch reader's schema (batch/README.md): transaction requests waiting to be
-- published to the broker as dev.eventworks.tx.sign.requested. A role of the same
-- name owns the schema and nothing else, like the function schemas of 0001; the
-- batch reader and the seed job connect as (or SET ROLE to) it.
--
-- The checks mirror eventing.events.TxSignRequested, so that every row makes a
-- valid event: a row that could not would stay pending for ever.
-- depends: 0001.function-schemas

DO $migration$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'batch') THEN
    CREATE ROLE batch LOGIN;
  END IF;
  -- The migrating user may SET ROLE batch (for a shared login URL).
  GRANT batch TO CURRENT_USER;
END
$migration$;

CREATE SCHEMA batch AUTHORIZATION batch;
REVOKE ALL ON SCHEMA batch FROM PUBLIC;

CREATE TABLE batch.tx_requests (
  request_id               text           PRIMARY KEY
                           CHECK (request_id ~ '^[\x21-\x7e]{1,200}$'),
  chain_id                 bigint         NOT NULL CHECK (chain_id > 0),
  "to"                     text           NOT NULL CHECK ("to" ~ '^0x[0-9a-fA-F]{40}$'),
  value                    numeric(78, 0) NOT NULL CHECK (value >= 0),  -- wei; uint256 fits
  data                     text           NOT NULL DEFAULT '0x'
                           CHECK (data ~ '^0x([0-9a-fA-F]{2})*$'),
  gas_limit                bigint         NOT NULL CHECK (gas_limit > 0),
  max_fee_per_gas          numeric(78, 0) NOT NULL CHECK (max_fee_per_gas >= 0),
  max_priority_fee_per_gas numeric(78, 0) NOT NULL CHECK (max_priority_fee_per_gas >= 0),
  -- clock_timestamp, not now(): rows inserted in one transaction keep their order.
  created_at               timestamptz    NOT NULL DEFAULT clock_timestamp(),
  -- Set in the transaction that saw the broker's 202; NULL while pending.
  published_at             timestamptz
);

-- What the batch reader scans: the oldest pending requests.
CREATE INDEX tx_requests_pending ON batch.tx_requests (created_at, request_id)
  WHERE published_at IS NULL;

ALTER TABLE batch.tx_requests OWNER TO batch;
