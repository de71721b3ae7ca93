-- accrue-payment's double-entry ledger (functions/accrue-payment/README.md), schema `accounting`.
--
-- - accounts: one per (kind, holder, denomination): a user's (holder = the token subject, a
--   GitHub login) or the company's, the counter-party of every entry. `balance` is kept by
--   the database itself (a trigger on postings), never written by the function.
-- - journals: one per business event (a fee, a reward, a payout), with what it is about and
--   the CloudEvent that caused it. The partial unique indexes are the ledger's own
--   idempotency, beside the inbox's (source, id): one fee per assignment (task, version),
--   one reward per (task, assignee), one payout per payout id.
-- - postings: the journal's lines, exact `numeric`, never zero. A deferred constraint
--   trigger checks at commit that every journal it touched has at least two lines in one
--   denomination that sum to zero.
-- - closes: the days the daily close has run for (a day closes once, and never before a
--   later day).
--
-- Append-only audit trail: journals and postings belong to the migrating user; the role
-- `accounting` may only SELECT and INSERT them (so it cannot UPDATE, DELETE or TRUNCATE,
-- nor drop their triggers), and triggers refuse UPDATE, DELETE and TRUNCATE from anyone.
-- A correction is a new entry.
-- depends: 0001.function-schemas

CREATE TABLE accounting.accounts (
  account_id   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind         text        NOT NULL CHECK (kind IN ('user', 'company')),
  holder       text        NOT NULL CHECK (holder ~ '^[\x21-\x7e]{1,200}$'),
  denomination text        NOT NULL CHECK (denomination ~ '^[A-Za-z0-9]{1,20}$'),
  decimals     smallint    NOT NULL CHECK (decimals BETWEEN 0 AND 77),
  balance      numeric     NOT NULL DEFAULT 0,
  opened_at    timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT accounts_one_per_holder UNIQUE (kind, holder, denomination)
);
-- The daily close reads the positive user balances.
CREATE INDEX accounts_positive ON accounting.accounts (account_id)
  WHERE kind = 'user' AND balance > 0;

CREATE TABLE accounting.journals (
  journal_id   uuid        PRIMARY KEY,
  kind         text        NOT NULL CHECK (kind IN ('fee', 'reward', 'payout')),
  holder       text        NOT NULL,  -- the user the entry is about
  ref          text        NOT NULL,  -- the task id (fee, reward) or the payout id (payout)
  task_version integer     CHECK (task_version >= 1),
  day          date,                  -- the closed day (payout)
  event_source text        NOT NULL,  -- the CloudEvent that caused it (audit)
  event_id     text        NOT NULL,
  recorded_at  timestamptz NOT NULL DEFAULT now(),
  CHECK ((kind = 'fee') = (task_version IS NOT NULL)),
  CHECK ((kind = 'payout') = (day IS NOT NULL))
);
CREATE UNIQUE INDEX journals_one_fee_per_assignment ON accounting.journals (ref, task_version)
  WHERE kind = 'fee';
CREATE UNIQUE INDEX journals_one_reward_per_assignee ON accounting.journals (ref, holder)
  WHERE kind = 'reward';
CREATE UNIQUE INDEX journals_one_per_payout ON accounting.journals (ref)
  WHERE kind = 'payout';

CREATE TABLE accounting.postings (
  journal_id uuid     NOT NULL REFERENCES accounting.journals,
  line       smallint NOT NULL CHECK (line >= 1),
  account_id bigint   NOT NULL REFERENCES accounting.accounts,
  amount     numeric  NOT NULL CHECK (amount <> 0),  -- + credits the account, - debits it
  PRIMARY KEY (journal_id, line)
);
-- A user's recent entries (balance.get).
CREATE INDEX postings_by_account ON accounting.postings (account_id);

CREATE TABLE accounting.closes (
  day          date        PRIMARY KEY,
  payouts      integer     NOT NULL CHECK (payouts >= 0),
  event_source text        NOT NULL,
  event_id     text        NOT NULL,
  closed_at    timestamptz NOT NULL DEFAULT now()
);

-- Balances follow the postings, in the inserting transaction: the UPDATE locks the
-- account's row until commit, so concurrent entries for one account queue up instead of
-- losing an update. SECURITY DEFINER: the role `accounting` has no UPDATE on accounts.
CREATE FUNCTION accounting.posting_moves_balance() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, accounting AS $$
BEGIN
  UPDATE accounting.accounts SET balance = balance + NEW.amount
   WHERE account_id = NEW.account_id;
  RETURN NULL;
END
$$;
CREATE TRIGGER postings_move_balances AFTER INSERT ON accounting.postings
  FOR EACH ROW EXECUTE FUNCTION accounting.posting_moves_balance();

-- Double entry, enforced at commit (deferred: a journal's lines are inserted one by one).
CREATE FUNCTION accounting.journal_balances() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, accounting AS $$
DECLARE
  lines bigint;
  total numeric;
  denominations bigint;
BEGIN
  SELECT count(*), coalesce(sum(p.amount), 0), count(DISTINCT a.denomination)
    INTO lines, total, denominations
    FROM accounting.postings p JOIN accounting.accounts a USING (account_id)
   WHERE p.journal_id = NEW.journal_id;
  IF lines < 2 OR total <> 0 OR denominations <> 1 THEN
    RAISE EXCEPTION 'journal % does not balance: % lines in % denominations sum to %',
      NEW.journal_id, lines, denominations, total
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER journals_balance AFTER INSERT ON accounting.journals
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION accounting.journal_balances();
CREATE CONSTRAINT TRIGGER postings_balance AFTER INSERT ON accounting.postings
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION accounting.journal_balances();

CREATE FUNCTION accounting.append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '%.% is append-only: a correction is a new entry', TG_TABLE_SCHEMA, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER journals_append_only BEFORE UPDATE OR DELETE ON accounting.journals
  FOR EACH ROW EXECUTE FUNCTION accounting.append_only();
CREATE TRIGGER journals_no_truncate BEFORE TRUNCATE ON accounting.journals
  FOR EACH STATEMENT EXECUTE FUNCTION accounting.append_only();
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON accounting.postings
  FOR EACH ROW EXECUTE FUNCTION accounting.append_only();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON accounting.postings
  FOR EACH STATEMENT EXECUTE FUNCTION accounting.append_only();

-- The function's role: read everything, add entries and accounts, never change them.
GRANT SELECT, INSERT ON accounting.journals, accounting.postings TO accounting;
GRANT SELECT ON accounting.accounts TO accounting;
GRANT INSERT (kind, holder, denomination, decimals) ON accounting.accounts TO accounting;
ALTER TABLE accounting.closes OWNER TO accounting;
REVOKE ALL ON FUNCTION accounting.posting_moves_balance() FROM PUBLIC;
REVOKE ALL ON FUNCTION accounting.journal_balances() FROM PUBLIC;
