-- parse-comment's memory (functions/parse-comment/README.md), in its own schema, owned by
-- its role. Every row is written in the transaction that claims the event in the inbox.
-- - bounties: one per source (an issue comment, an issue body or a pull request body),
--   keyed by bounty_id = uuid5(repository id + source kind + source id). The terms are
--   parse-comment's own: a funded pledge is held to them. source_updated_at is the newest
--   version of the source applied (an older `edited` arriving late changes nothing);
--   deleted marks a source deleted, even before its bounty was known (a tombstone).
--   payout_id = eventing.events.bounty_payout_id(bounty_id), set when claimed: tx.verified
--   and tx.rejected find the bounty by it.
-- - bot_comments: the bot's one comment per key (`bounty:<id>`, `notice:<source>`,
--   `challenge:<login>:<address>`, …) with the id GitHub gave it and the body it last
--   wrote. The GitHub call is made inside the transaction that records it; a retry whose
--   first try did not commit finds the comment by the hidden marker in its body
--   (functions/parse-comment/function/bot.py), so no second comment is ever posted.
-- depends: 0001.function-schemas

CREATE TABLE parse_comment.bounties (
  bounty_id          text        PRIMARY KEY,
  source_kind        text        NOT NULL CHECK (source_kind IN ('comment', 'issue', 'pull_request')),
  source_id          bigint      NOT NULL,
  repository_id      bigint      NOT NULL,
  repository         text        NOT NULL,
  issue_number       integer     NOT NULL CHECK (issue_number > 0),
  status             text        NOT NULL
                     CHECK (status IN ('requested', 'funded', 'claimed', 'paid', 'cancelled')),
  deleted            boolean     NOT NULL DEFAULT false,
  funder_login       text,
  funder_id          bigint,
  denomination       text,
  amount             text,
  amount_base_units  numeric(78, 0) CHECK (amount_base_units > 0),
  decimals           integer     CHECK (decimals >= 0),
  chain_id           bigint      CHECK (chain_id > 0),
  source_updated_at  timestamptz,
  funder_address     text,
  solver_login       text,
  solver_id          bigint,
  pull_request       integer,
  pull_request_url   text,
  payout_id          text        UNIQUE,
  claim_published    boolean,    -- false: claimed with another bounty of one merge, not sent
  tx_hash            text,
  note               text,       -- what the bot comment adds (a refused pledge, a rejection)
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now(),
  CHECK (status = 'cancelled' OR amount_base_units IS NOT NULL)
);
CREATE INDEX bounties_issue ON parse_comment.bounties (lower(repository), issue_number);

CREATE TABLE parse_comment.bot_comments (
  key           text        PRIMARY KEY,
  repository    text        NOT NULL,
  issue_number  integer     NOT NULL CHECK (issue_number > 0),
  comment_id    bigint      NOT NULL,
  body          text        NOT NULL,
  updated_at    timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE parse_comment.bounties OWNER TO parse_comment;
ALTER TABLE parse_comment.bot_comments OWNER TO parse_comment;
