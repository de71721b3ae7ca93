"""Benchmarks: `./taskw bench`."""
