-- link-identity's memory (functions/link-identity/README.md), in schema `identity`, owned by
-- its role:
-- - challenges: every EIP-4361 challenge issued, keyed by its nonce (single use: `used_at`
--   is set by the link that spent it, or by a later link of the same account that made
--   every other open challenge void).
-- - links: GitHub account → address, with history: a relink closes the current row
--   (`superseded_at`) and adds one; nothing is deleted. At most one current row per GitHub
--   id and per login (case-insensitive, as GitHub's logins are).
-- - payouts: every payout resolved or waiting for a link, keyed by payout id; `to_address`
--   is NULL while it waits and set once, to the address it was (or will be) paid to.
-- depends: 0001.function-schemas

CREATE TABLE identity.challenges (
  nonce            text        PRIMARY KEY CHECK (nonce ~ '^[A-Za-z0-9]{8,}$'),
  github_login     text        NOT NULL,
  github_id        bigint      NOT NULL,
  address          text        NOT NULL CHECK (address ~ '^0x[0-9a-f]{40}$'),  -- lower-case
  message          text        NOT NULL,  -- the EIP-4361 text issued, byte for byte
  issued_at        timestamptz NOT NULL,
  expires_at       timestamptz NOT NULL CHECK (expires_at > issued_at),
  where_repository text,
  where_issue      integer     CHECK (where_issue > 0),
  used_at          timestamptz,
  event_source     text        NOT NULL,  -- the link.started that asked for it (audit)
  event_id         text        NOT NULL
);
CREATE INDEX challenges_open_by_account ON identity.challenges (github_id) WHERE used_at IS NULL;

CREATE TABLE identity.links (
  link_id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  github_login  text        NOT NULL,
  github_id     bigint      NOT NULL,
  address       text        NOT NULL CHECK (address ~ '^0x[0-9a-f]{40}$'),  -- lower-case
  nonce         text        NOT NULL UNIQUE REFERENCES identity.challenges (nonce),
  linked_at     timestamptz NOT NULL DEFAULT now(),
  superseded_at timestamptz
);
CREATE UNIQUE INDEX links_current_by_id ON identity.links (github_id)
  WHERE superseded_at IS NULL;
CREATE UNIQUE INDEX links_current_by_login ON identity.links (lower(github_login))
  WHERE superseded_at IS NULL;

CREATE TABLE identity.payouts (
  payout_id         text        PRIMARY KEY,
  reason            text        NOT NULL CHECK (reason IN ('bounty', 'earnings')),
  ref               text        NOT NULL,
  github_login      text        NOT NULL,
  github_id         bigint,     -- known for bounty claims: they resolve by id
  denomination      text        NOT NULL,
  amount_base_units numeric(78,0) NOT NULL CHECK (amount_base_units >= 0),
  where_repository  text,
  where_issue       integer     CHECK (where_issue > 0),
  to_address        text        CHECK (to_address ~ '^0x[0-9a-f]{40}$'),  -- NULL: waiting
  asked_at          timestamptz NOT NULL DEFAULT now(),
  resolved_at       timestamptz,
  CHECK ((to_address IS NULL) = (resolved_at IS NULL))
);
CREATE INDEX payouts_waiting_by_login ON identity.payouts (lower(github_login))
  WHERE to_address IS NULL;

ALTER TABLE identity.challenges OWNER TO identity;
ALTER TABLE identity.links OWNER TO identity;
ALTER TABLE identity.payouts OWNER TO identity;
