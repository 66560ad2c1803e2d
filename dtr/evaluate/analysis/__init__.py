"""Analyses of trained workdirs, one module per family, each a library of functions plus a `main(argv)` that
`python -m dtr.analyze NAME` runs: `jacobian` (bag-of-words VAEs), `bits` (sentence codes), `clusters`
(discrete codes)."""
