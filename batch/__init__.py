"""The batch reader and the seed job: pending transaction requests in PostgreSQL
(`batch.tx_requests`) relayed to the broker as `dev.eventworks.tx.sign.requested`.

A job, not one of the seven functions: `python -m batch` (see batch/README.md).
"""
