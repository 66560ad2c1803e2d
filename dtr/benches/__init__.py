"""Benchmarks and study tables of the families, one module each, run by `python -m dtr.bench NAME ...`
(each module's `main(argv)`; `python -m dtr.bench NAME --help` lists its options)."""
