"""Evaluation, one module per metric, all pure functions the training loop calls.

  retrieval   packed-bit Hamming top-k and precision@k (the bit-code file format)
  neighbours  exact top-k and precision@k for every code kind (bits, symbols, dense)
  radius      precision / recall of everything within a Hamming radius
  matching    matching accuracy@K of paired texts
  perplexity  corpus (per-token) and document (per-document average) perplexity
  classify    accuracy with unlabelled rows, mean and sample std over runs
  sparsity    Average Hoyer of dense codes
  codes       one writer / reader of saved codes and FORMAT.txt
"""

from dtr.evaluate.classify import accuracy, mean_std
from dtr.evaluate.codes import (CodeFormat, read_codes, read_format, read_labels, read_packed, write_codes,
                                write_format)
from dtr.evaluate.matching import matching_accuracy
from dtr.evaluate.neighbours import (cosine_topk, nearest, precision_at_k_codes, symbol_topk,
                                     symbols_to_bits)
from dtr.evaluate.perplexity import corpus_perplexity, document_perplexity
from dtr.evaluate.radius import RadiusCurve, precision_recall_at_radius
from dtr.evaluate.retrieval import (class_ids_to_bits, hamming_distances, hamming_topk, pack_bits,
                                    precision_at_k, precision_at_k_per_query, unpack_bits)
from dtr.evaluate.sparsity import average_hoyer, hoyer

__all__ = [
    'CodeFormat', 'RadiusCurve', 'accuracy', 'average_hoyer', 'class_ids_to_bits', 'corpus_perplexity',
    'cosine_topk', 'document_perplexity', 'hamming_distances', 'hamming_topk', 'hoyer', 'matching_accuracy',
    'mean_std', 'nearest', 'pack_bits', 'precision_at_k', 'precision_at_k_codes', 'precision_at_k_per_query',
    'precision_recall_at_radius', 'read_codes', 'read_format', 'read_labels', 'read_packed', 'symbol_topk',
    'symbols_to_bits', 'unpack_bits', 'write_codes', 'write_format',
]
