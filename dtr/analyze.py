r"""Analyses of a finished workdir: `python -m dtr.analyze NAME --workdir=DIR [options]`.

  jacobian   bag-of-words VAEs: the decoder Jacobian's singular-value spectrum (PNG), word neighbours
  bits       sentence codes: bit spoiling, bit means and covariance, Hamming-path interpolation (PNGs)
  clusters   discrete codes: the most frequent codes with example texts and majority labels

Each analysis is a module of `dtr.evaluate.analysis` whose functions the notebooks call directly. A user error
(a missing workdir, a workdir of another family) is one message and exit status 2; --verbose shows the traceback.
"""

import importlib
import sys

ANALYSES = {'jacobian': 'bow', 'bits': 'bits', 'clusters': 'clusters'}


def main(argv=None) -> None:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ('-h', '--help'):
    print(__doc__)
    return
  name = argv[0]
  if name not in ANALYSES:
    print(f'dtr: error: unknown analysis {name!r}; known: {", ".join(sorted(ANALYSES))}', file=sys.stderr)
    sys.exit(2)
  importlib.import_module(f'dtr.evaluate.analysis.{ANALYSES[name]}').main(argv[1:])


if __name__ == '__main__':
  from dtr import cli  # pylint: disable=g-import-not-at-top
  cli.guarded(main, sys.argv[1:])
