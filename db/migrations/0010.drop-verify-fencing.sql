-- verify-tx judges a stale lease per nonce, from verify.signed alone (the highest token
-- recorded at the slot's nonce or below: docs/decisions.md, "A stale lease is judged per
-- nonce"). verify.fencing, the per-sender highest token, was written on every verification
-- and read by nothing: an extra row lock and write per transaction. The same number is
-- `SELECT max(fencing_token) FROM verify.signed WHERE sender = …` for an operator.
-- depends: 0003.verify-signed

DROP TABLE verify.fencing;
