"""Fuzz targets: the parsers and the function edge, fed arbitrary bytes.

Each target (`targets.TARGETS`) states what must hold for ANY input: an answer or the
module's own refusal, never another exception, a 500 or a hang. The same checks run
coverage-guided under atheris (`python -m tests.fuzz TARGET [libFuzzer flags]`) and as
hypothesis properties in tests/test_fuzz.py.
"""
