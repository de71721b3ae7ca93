-- verify-tx's memory (functions/verify-tx/README.md), in its own schema, owned by its role:
-- - signed: the one payload verified for each (sender, chain id, nonce). The primary key is
--   the slot's unique constraint, Web3Signer's slashing protection for transactions: the
--   same payload (signing hash) may be verified again, another one is a double sign.
-- - fencing: per sender, the highest fencing token (etcd lock revision) under which a
--   payload was recorded; a write under a lower one comes from an expired lease.
-- depends: 0001.function-schemas

CREATE TABLE verify.signed (
  sender        text          NOT NULL CHECK (sender ~ '^0x[0-9a-f]{40}$'),  -- lower-case
  chain_id      numeric(78,0) NOT NULL CHECK (chain_id > 0),   -- an EIP-155 uint256
  nonce         numeric(20,0) NOT NULL CHECK (nonce >= 0),     -- at most 2^64 - 1 (EIP-2681)
  signing_hash  bytea         NOT NULL CHECK (octet_length(signing_hash) = 32),
  tx_hash       bytea         NOT NULL CHECK (octet_length(tx_hash) = 32),
  request_id    text          NOT NULL,
  fencing_token bigint        NOT NULL CHECK (fencing_token > 0),
  event_source  text          NOT NULL,  -- the tx.signed event that recorded it (audit)
  event_id      text          NOT NULL,
  verified_at   timestamptz   NOT NULL DEFAULT now(),
  CONSTRAINT signed_one_payload_per_slot PRIMARY KEY (sender, chain_id, nonce)
);

CREATE TABLE verify.fencing (
  sender        text        PRIMARY KEY CHECK (sender ~ '^0x[0-9a-f]{40}$'),
  highest_token bigint      NOT NULL CHECK (highest_token > 0),
  updated_at    timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE verify.signed OWNER TO verify;
ALTER TABLE verify.fencing OWNER TO verify;
