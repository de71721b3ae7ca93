-- accrue-payment's ledger, faster (issue 8), with every rule of 0009 kept:
--
-- - Balances move off `accounts` into `balances`: an account's balance is the sum of its
--   rows there (shards). A booking adds its amount to any shard of the account that no other
--   transaction holds (SKIP LOCKED), opening a new one when all are busy (up to 16), so the
--   company account, every entry's counter-party, is no longer one row that every booking
--   locks until it commits. Still kept by the database alone (a trigger on postings, one
--   statement at a time), still read-only for the role `accounting`; read balances through
--   the view `account_balances`.
-- - `book(...)`: one statement books a fact or a close (journals, accounts, postings), where
--   the function made three round trips. SECURITY INVOKER: it runs with the role's own
--   rights (INSERT on journals, postings and account openings), so it can do nothing the role
--   could not; the deferred double-entry check and the append-only triggers of 0009 apply to
--   what it writes as to anything else.
-- depends: 0009.accounting-ledger

CREATE TABLE accounting.balances (
  account_id bigint   NOT NULL REFERENCES accounting.accounts,
  shard      smallint NOT NULL CHECK (shard BETWEEN 0 AND 15),
  balance    numeric  NOT NULL,
  PRIMARY KEY (account_id, shard)
);
-- No index on `balance`: its updates stay HOT (no new index entries per booking).
INSERT INTO accounting.balances (account_id, shard, balance)
  SELECT account_id, 0, balance FROM accounting.accounts;

DROP TRIGGER postings_move_balances ON accounting.postings;
DROP FUNCTION accounting.posting_moves_balance();
ALTER TABLE accounting.accounts DROP COLUMN balance;  -- and its index accounts_positive

CREATE VIEW accounting.account_balances AS
  SELECT a.account_id, a.kind, a.holder, a.denomination, a.decimals,
         coalesce((SELECT sum(b.balance) FROM accounting.balances b
                    WHERE b.account_id = a.account_id), 0) AS balance
    FROM accounting.accounts a;

-- Once per INSERT statement on postings: each account's total, in account order (one lock
-- order for every booking: no cycle between bookings), into a shard nobody else holds.
CREATE FUNCTION accounting.postings_move_balances() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, accounting AS $$
DECLARE
  moved record;
  free smallint;
BEGIN
  FOR moved IN SELECT account_id, sum(amount) AS amount FROM added
                GROUP BY account_id ORDER BY account_id LOOP
    UPDATE accounting.balances SET balance = balance + moved.amount
     WHERE account_id = moved.account_id
       AND shard = (SELECT shard FROM accounting.balances
                     WHERE account_id = moved.account_id
                     ORDER BY shard LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED);
    IF NOT FOUND THEN
      -- Every shard busy (or none yet): open the next one, or wait on a random one when
      -- all 16 exist. Two openers of the same shard: the second adds to it after the
      -- first commits.
      SELECT CASE WHEN count(*) < 16 THEN count(*) ELSE floor(random() * 16) END
        INTO free FROM accounting.balances WHERE account_id = moved.account_id;
      INSERT INTO accounting.balances AS b (account_id, shard, balance)
      VALUES (moved.account_id, free, moved.amount)
      ON CONFLICT (account_id, shard) DO UPDATE SET balance = b.balance + EXCLUDED.balance;
    END IF;
  END LOOP;
  RETURN NULL;
END
$$;
CREATE TRIGGER postings_move_balances AFTER INSERT ON accounting.postings
  REFERENCING NEW TABLE AS added
  FOR EACH STATEMENT EXECUTE FUNCTION accounting.postings_move_balances();

-- Entries as parallel arrays (one element per entry); each is a journal with the user's line
-- (+amount) and the company's counter-line (-amount). An entry the ledger already has (its
-- unique keys of 0009) is skipped. Returns the journals booked. A denomination the ledger
-- keeps with other decimals: SQLSTATE 22023 with COLUMN 'decimals', nothing written.
CREATE FUNCTION accounting.book(
  journal_ids uuid[], kinds text[], holders text[], refs text[], task_versions integer[],
  days date[], denominations text[], decimals smallint[], amounts numeric[],
  event_source text, event_id text, company text) RETURNS uuid[]
LANGUAGE plpgsql SECURITY INVOKER AS $$
DECLARE
  booked uuid[];
  wrong record;
  posted bigint;
  l_journals uuid[];
  l_lines smallint[];
  l_kinds text[];
  l_holders text[];
  l_denominations text[];
  l_decimals smallint[];
  l_amounts numeric[];
BEGIN
  WITH added AS (
    INSERT INTO accounting.journals (journal_id, kind, holder, ref, task_version, day,
                                     event_source, event_id)
    SELECT e.journal_id, e.kind, e.holder, e.ref, e.task_version, e.day,
           book.event_source, book.event_id
      FROM unnest(book.journal_ids, book.kinds, book.holders, book.refs,
                  book.task_versions, book.days)
           AS e (journal_id, kind, holder, ref, task_version, day)
    ON CONFLICT DO NOTHING
    RETURNING journal_id)
  SELECT coalesce(array_agg(journal_id), '{}') INTO booked FROM added;
  IF cardinality(booked) = 0 THEN
    RETURN booked;
  END IF;

  -- The booked entries' lines, the user's (1) and the company's (2).
  SELECT array_agg(e.journal_id), array_agg(l.line), array_agg(l.kind), array_agg(l.holder),
         array_agg(e.denomination), array_agg(e.decimals), array_agg(l.amount)
    INTO l_journals, l_lines, l_kinds, l_holders, l_denominations, l_decimals, l_amounts
    FROM unnest(book.journal_ids, book.holders, book.denominations, book.decimals,
                book.amounts)
         AS e (journal_id, holder, denomination, decimals, amount)
   CROSS JOIN LATERAL (VALUES (1::smallint, 'user', e.holder, e.amount),
                              (2::smallint, 'company', book.company, -e.amount))
         AS l (line, kind, holder, amount)
   WHERE e.journal_id = ANY (booked);

  -- Open what is missing; a concurrent opening is waited for here and seen by the next
  -- statement (each statement of a function has its own snapshot).
  INSERT INTO accounting.accounts (kind, holder, denomination, decimals)
  SELECT DISTINCT l.kind, l.holder, l.denomination, l.decimals
    FROM unnest(l_kinds, l_holders, l_denominations, l_decimals)
         AS l (kind, holder, denomination, decimals)
   ORDER BY 1, 2, 3
  ON CONFLICT (kind, holder, denomination) DO NOTHING;

  SELECT l.denomination, a.decimals AS known, l.decimals AS given INTO wrong
    FROM unnest(l_kinds, l_holders, l_denominations, l_decimals)
         AS l (kind, holder, denomination, decimals)
    JOIN accounting.accounts a USING (kind, holder, denomination)
   WHERE a.decimals <> l.decimals LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION '% has % decimals in the ledger, not %',
      wrong.denomination, wrong.known, wrong.given
      USING ERRCODE = 'invalid_parameter_value', COLUMN = 'decimals';
  END IF;

  INSERT INTO accounting.postings (journal_id, line, account_id, amount)
  SELECT l.journal_id, l.line, a.account_id, l.amount
    FROM unnest(l_journals, l_lines, l_kinds, l_holders, l_denominations, l_amounts)
         AS l (journal_id, line, kind, holder, denomination, amount)
    JOIN accounting.accounts a USING (kind, holder, denomination);
  GET DIAGNOSTICS posted = ROW_COUNT;
  IF posted <> 2 * cardinality(booked) THEN
    RAISE EXCEPTION 'accounts of % journals neither opened nor found', cardinality(booked);
  END IF;
  RETURN booked;
END
$$;

GRANT SELECT ON accounting.balances, accounting.account_balances TO accounting;
REVOKE ALL ON FUNCTION accounting.postings_move_balances() FROM PUBLIC;
REVOKE ALL ON FUNCTION accounting.book(uuid[], text[], text[], text[], integer[], date[], text[],
                                      smallint[], numeric[], text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION accounting.book(uuid[], text[], text[], text[], integer[], date[],
                                          text[], smallint[], numeric[], text, text, text)
  TO accounting;
