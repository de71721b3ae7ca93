-- accrue-payment's task facts in one statement (issue 8): `book_fact(...)` claims the
-- event's inbox row, books its entry and records the answer, where the edge made three
-- statements inside BEGIN … COMMIT (5 round trips). The function sends it in autocommit:
-- the statement is its own transaction, so it is 1 round trip, and all of it commits or
-- none of it does (the deferred double-entry check of 0009 runs at that commit as at any
-- other). Every rule stays where it was: the inbox's key (source, id), the ledger's unique
-- keys, the append-only triggers, the sharded balances (0011's trigger on postings).
--
-- A fact is always answered 202 with no reply, so the inbox row is written with its answer
-- at once. A (source, id) the inbox already has: nothing is written, and the recorded
-- digest and answer are returned for the function to compare (the same data: the first
-- answer again; other data: a 409). A concurrent delivery of the same event waits on the
-- first's inbox row, then reads it in the next statement's snapshot (READ COMMITTED), as
-- the edge's claim does (eventing/inbox.py).
--
-- A fact books at most one entry, so it comes as scalars (kind NULL: nothing to book, the
-- event is still claimed) and is booked without `book`'s arrays: the journal (an entry the
-- ledger already has under another event id is skipped), the company's account then the
-- user's (`book`'s order), each looked up before it is opened, the same decimals error as
-- `book` (22023, COLUMN decimals), and both postings in one INSERT, so the balance trigger
-- runs once. The daily close keeps using `book`. SECURITY INVOKER: only the role's rights.
-- depends: 0011.accounting-fast-booking 0012.parse-comment-bot-posts

-- One account of a fact's entry: looked up, and opened first when missing (a concurrent
-- opening is waited for by the INSERT and seen by the next statement, READ COMMITTED).
-- Returns the decimals the ledger keeps for it, for book_fact to compare.
CREATE FUNCTION accounting.opened_account(
  account_kind text, account_holder text, account_denomination text,
  account_decimals smallint, OUT account_id bigint, OUT decimals smallint)
LANGUAGE plpgsql SECURITY INVOKER AS $$
BEGIN
  SELECT a.account_id, a.decimals INTO opened_account.account_id, opened_account.decimals
    FROM accounting.accounts a
   WHERE a.kind = account_kind AND a.holder = account_holder
     AND a.denomination = account_denomination;
  IF NOT FOUND THEN
    INSERT INTO accounting.accounts (kind, holder, denomination, decimals)
    VALUES (account_kind, account_holder, account_denomination, account_decimals)
    ON CONFLICT ON CONSTRAINT accounts_one_per_holder DO NOTHING;
    SELECT a.account_id, a.decimals INTO opened_account.account_id, opened_account.decimals
      FROM accounting.accounts a
     WHERE a.kind = account_kind AND a.holder = account_holder
       AND a.denomination = account_denomination;
  END IF;
END
$$;

CREATE FUNCTION accounting.book_fact(
  event_source text, event_id text, event_digest bytea,
  kind text, holder text, ref text, task_version integer, denomination text,
  decimals smallint, amount numeric, company text,
  OUT first boolean, OUT known_digest bytea, OUT known_status smallint, OUT known_reply json)
LANGUAGE plpgsql SECURITY INVOKER AS $$
DECLARE
  journal uuid := gen_random_uuid();
  company_account bigint;
  company_decimals smallint;
  user_account bigint;
  user_decimals smallint;
BEGIN
  INSERT INTO accounting.inbox (source, id, digest, status)
  VALUES (book_fact.event_source, book_fact.event_id, book_fact.event_digest, 202)
  ON CONFLICT (source, id) DO NOTHING;
  IF NOT FOUND THEN
    first := false;
    SELECT i.digest, i.status, i.reply INTO known_digest, known_status, known_reply
      FROM accounting.inbox i
     WHERE i.source = book_fact.event_source AND i.id = book_fact.event_id;
    RETURN;
  END IF;
  first := true;
  IF book_fact.kind IS NULL THEN
    RETURN;
  END IF;

  INSERT INTO accounting.journals (journal_id, kind, holder, ref, task_version,
                                   event_source, event_id)
  VALUES (journal, book_fact.kind, book_fact.holder, book_fact.ref, book_fact.task_version,
          book_fact.event_source, book_fact.event_id)
  ON CONFLICT DO NOTHING;
  IF NOT FOUND THEN
    RETURN;  -- the same entry under another event id: booked once
  END IF;

  -- The accounts in `book`'s order (kind, holder, denomination): the company's, then the
  -- user's, each opened when missing.
  SELECT o.account_id, o.decimals INTO company_account, company_decimals
    FROM accounting.opened_account('company', book_fact.company, book_fact.denomination,
                                   book_fact.decimals) o;
  SELECT o.account_id, o.decimals INTO user_account, user_decimals
    FROM accounting.opened_account('user', book_fact.holder, book_fact.denomination,
                                   book_fact.decimals) o;
  IF company_decimals <> book_fact.decimals OR user_decimals <> book_fact.decimals THEN
    RAISE EXCEPTION '% has % decimals in the ledger, not %', book_fact.denomination,
      CASE WHEN company_decimals <> book_fact.decimals THEN company_decimals
           ELSE user_decimals END, book_fact.decimals
      USING ERRCODE = 'invalid_parameter_value', COLUMN = 'decimals';
  END IF;

  INSERT INTO accounting.postings (journal_id, line, account_id, amount)
  VALUES (journal, 1, user_account, book_fact.amount),
         (journal, 2, company_account, -book_fact.amount);
END
$$;

REVOKE ALL ON FUNCTION accounting.opened_account(text, text, text, smallint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION accounting.opened_account(text, text, text, smallint) TO accounting;
REVOKE ALL ON FUNCTION accounting.book_fact(text, text, bytea, text, text, text, integer, text,
                                           smallint, numeric, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION accounting.book_fact(text, text, bytea, text, text, text, integer,
                                               text, smallint, numeric, text)
  TO accounting;
