-- sign-tx's memory (functions/sign-tx/README.md), in its own schema, owned by its role.
-- Every row is written in the transaction that also claims the request's event in the
-- inbox, so a nonce is used only by a signed transaction that is stored, and a crash
-- before the commit leaves neither (no gap, no second nonce for one request).
-- - nonces: the next nonce of each (sender, chain id); its row lock orders the signers.
-- - fencing: per key, the highest lease fencing token (etcd lock revision) a write was
--   made under; a write under a lower one comes from a lease that has since expired and
--   been given to another worker, and is refused.
-- - transactions: every signed transaction. UNIQUE (request_id): one transaction per
--   request, a redelivery answers with it. UNIQUE (sender, chain_id, nonce): never two
--   payloads for one nonce of a key (Web3Signer's slashing protection, for transactions).
-- depends: 0001.function-schemas

CREATE TABLE signing.nonces (
  sender      text        NOT NULL CHECK (sender ~ '^0x[0-9a-f]{40}$'),
  chain_id    bigint      NOT NULL CHECK (chain_id > 0),
  next_nonce  bigint      NOT NULL CHECK (next_nonce >= 0),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (sender, chain_id)
);

CREATE TABLE signing.fencing (
  sender        text        PRIMARY KEY CHECK (sender ~ '^0x[0-9a-f]{40}$'),
  fencing_token bigint      NOT NULL CHECK (fencing_token > 0),
  lease_id      text        NOT NULL,
  worker_id     text        NOT NULL,
  updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE signing.transactions (
  request_id     text        NOT NULL,
  request_digest bytea       NOT NULL,   -- sha256 of what was asked: same id, other ask → 409
  sender         text        NOT NULL CHECK (sender ~ '^0x[0-9a-f]{40}$'),
  chain_id       bigint      NOT NULL CHECK (chain_id > 0),
  nonce          bigint      NOT NULL CHECK (nonce >= 0),
  signing_hash   bytea       NOT NULL CHECK (length(signing_hash) = 32),
  tx_hash        bytea       NOT NULL CHECK (length(tx_hash) = 32),
  raw_tx         bytea       NOT NULL,
  fencing_token  bigint      NOT NULL CHECK (fencing_token > 0),
  lease_id       text        NOT NULL,
  worker_id      text        NOT NULL,
  signed_at      timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT transactions_request_id_key UNIQUE (request_id),
  CONSTRAINT transactions_sender_chain_id_nonce_key UNIQUE (sender, chain_id, nonce)
);

ALTER TABLE signing.nonces OWNER TO signing;
ALTER TABLE signing.fencing OWNER TO signing;
ALTER TABLE signing.transactions OWNER TO signing;
