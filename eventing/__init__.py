"""Shared code of the eventworks functions: the event catalog, the function edge,
errors, settings, the idempotency inbox, logging.

`kn func build` sees only a function's own folder, so deployment vendors this
package into each function's build context; the source tree keeps one copy.
"""
