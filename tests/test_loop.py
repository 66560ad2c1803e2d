"""The one loop's pieces: batchers of every input kind, label budgets as members, evaluators from the config."""

import pathlib
import re

import ml_collections
import numpy as np
import pytest
import scipy.sparse as sp

from dtr import config_utils, methods, train
from dtr import input_pipeline as ip
from dtr.data import Split
from dtr.data.corpus import Tokens
from dtr.evaluate import evaluators


def _split(num_docs=53, vocab=40, seed=0, with_tokens=True):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, 30, num_docs)
  seqs = [rng.integers(4, vocab, n) for n in lengths]
  counts = sp.csr_matrix((num_docs, vocab), dtype=np.int32)
  rows = np.repeat(np.arange(num_docs), lengths)
  counts = sp.csr_matrix((np.ones(rows.size, np.int32), (rows, np.concatenate(seqs))), shape=(num_docs, vocab))
  counts.sum_duplicates()
  tfidf = sp.csr_matrix(counts, dtype=np.float32)
  tfidf.data = tfidf.data / np.repeat(np.sqrt(np.asarray(tfidf.multiply(tfidf).sum(1)).ravel()), np.diff(tfidf.indptr))
  labels = np.eye(3, dtype=bool)[rng.integers(0, 3, num_docs)]
  return Split(tfidf=tfidf, labels=labels, counts=counts, doc_ids=np.arange(num_docs),
               tokens=Tokens.from_lists(seqs) if with_tokens else None)


def _docs_of_bow_batch(batch, split):
  """The document rows of a host bow batch [groups, T], recovered from its entries (unique rows per doc)."""
  rows = []
  for g in range(batch['ids'].shape[0]):
    per = batch['mask'].shape[-1]
    for slot in range(per):
      entries = (batch['seg'][g] == slot) & (batch['vals'][g] > 0)
      ids = np.sort(batch['ids'][g][entries])
      match = [r for r in range(split.num_docs) if np.array_equal(split.tfidf[r].indices, ids)]
      rows.append(match[0] if len(match) == 1 else -1)
  return rows


@pytest.mark.parametrize('kind', ['bow', 'tokens'])
def test_every_document_appears_once_per_epoch_and_padding_is_masked(kind):
  split = _split()
  batch_size, per_call = 8, 3
  order = ip.epoch_order(5, 2, split.num_docs)
  seen = []
  for step, k, batch in ip.train_chunks(kind, split, [order], per_member=False, batch_size=batch_size,
                                        start_step=0, steps_per_call=per_call, sharded=True,
                                        fields=('counts', 'label') if kind == 'bow' else ('label',)):
    assert batch['valid'].tolist() == [True] * k + [False] * (per_call - k)
    for t in range(k):
      if kind == 'tokens':
        tokens, lengths = batch['tokens'][t], batch['lengths'][t]
        assert tokens.shape[1] in ip.TOKEN_WIDTHS and tokens.shape[1] > lengths.max()
        for b in range(batch_size):
          row = order[(step + t) * batch_size + b]
          np.testing.assert_array_equal(tokens[b, :lengths[b]], split.tokens.row(row))
          assert (tokens[b, lengths[b]:] == 0).all()  # padding is pad id, beyond the length
          seen.append(row)
        assert (batch['label'][t] == split.labels[order[(step + t) * batch_size:(step + t + 1) * batch_size]]
                .argmax(1)).all()
      else:
        rows = _docs_of_bow_batch({key: v[t] for key, v in batch.items() if key != 'valid'}, split)
        np.testing.assert_array_equal(rows, order[(step + t) * batch_size:(step + t + 1) * batch_size])
        # counts sit at the TF-IDF entries' positions; padding has value 0 everywhere
        assert ((batch['counts'][t] > 0) == (batch['vals'][t] > 0)).all()
        seen.extend(rows)
  full = split.num_docs // batch_size * batch_size
  assert sorted(seen) == sorted(order[:full].tolist()) and len(set(seen)) == full


@pytest.mark.parametrize('kind', ['bow', 'tokens'])
def test_eval_batches_cover_the_split_once_with_padding_rows_masked(kind):
  split = _split(num_docs=21)
  masks, total = [], 0
  for n, batch in ip.eval_batches(kind, split, 16):
    mask = batch['mask'].reshape(-1)
    assert mask.sum() == n and (mask[:n] == 1).all() and (mask[n:] == 0).all()
    total += n
    if kind == 'tokens':
      for b in range(n):
        row = total - n + b
        np.testing.assert_array_equal(batch['tokens'][b, :batch['lengths'][b]], split.tokens.row(row))
  assert total == split.num_docs


def test_members_with_their_own_rows_see_only_those_rows():
  split = _split(num_docs=60)
  subsets = [np.sort(np.random.default_rng(i).choice(60, 16, replace=False)) for i in range(3)]
  orders = [ip.member_order(rows, 10 + i, 0, 60) for i, rows in enumerate(subsets)]
  for _, k, batch in ip.train_chunks('tokens', split, orders, per_member=True, batch_size=8, start_step=0,
                                     steps_per_call=2, sharded=False):
    assert batch['tokens'].shape[:3] == (3, 2, 8)
    for m in range(3):
      for t in range(k):
        for b in range(8):
          length = batch['lengths'][m, t, b]
          row = [r for r in subsets[m] if np.array_equal(split.tokens.row(r), batch['tokens'][m, t, b, :length])]
          assert row, 'a member saw a row outside its subsample'


def test_token_width_buckets():
  assert ip.token_width(0) == 8 and ip.token_width(7) == 8 and ip.token_width(8) == 16
  with pytest.raises(ValueError, match='max_len'):
    ip.token_width(10**6)


def test_evaluators_from_the_config_and_their_errors():
  names = [type(e).__name__ for e in evaluators.build(('precision@100', 'perplexity', 'accuracy', 'matching@10'))]
  assert names == ['Retrieval', 'Perplexity', 'Accuracy', 'Matching']
  with pytest.raises(ValueError, match='unknown evaluator'):
    evaluators.build(('precision',))
  with pytest.raises(ValueError, match='names no evaluator'):
    evaluators.build(())
  assert evaluators.parse_select(('valid/perplexity', 'min')) == ('perplexity', 'min')
  with pytest.raises(ValueError, match='valid/<metric>'):
    evaluators.parse_select(('test/accuracy', 'max'))
  with pytest.raises(ValueError, match='valid/<metric>'):
    evaluators.parse_select(('valid/accuracy', 'best'))


def test_select_must_name_a_reported_metric(tmp_path):
  config = config_utils.load_config_module('ammi').get_config('tiny')
  config.select = ('valid/accuracy', 'max')
  with pytest.raises(ValueError, match='no evaluator'):
    train.train_and_evaluate(config, str(tmp_path))


def test_a_sequence_method_on_a_tfidf_only_set_names_the_corpora_with_text(tmp_path):
  config = config_utils.load_config_module('classify').get_config('method=cbow,dataset=ng20')
  with pytest.raises(ValueError, match='dbpedia14'):
    train.train_and_evaluate(config, str(tmp_path))


def test_label_budget_larger_than_the_pool_is_refused(tmp_path):
  config = config_utils.load_config_module('classify').get_config('method=cbow,tiny')
  config.data.labels = '5000'
  with pytest.raises(ValueError, match='5000'):
    train.train_and_evaluate(config, str(tmp_path))


def test_cbow_trains_one_member_per_label_subsample_and_reports_mean_and_std(tmp_path):
  config = config_utils.load_config_module('classify').get_config('method=cbow,tiny')
  config.num_epochs = 3
  results = train.train_and_evaluate(config, str(tmp_path / 'cbow'))
  assert results['members_reported'] == 5 and len(results['members']) == 5
  accuracies = [m['test/accuracy'] for m in results['members']]
  assert results['test/accuracy'] == pytest.approx(np.mean(accuracies))
  assert results['test/accuracy_std'] == pytest.approx(np.std(accuracies, ddof=1))
  assert len({m['train_rows'] for m in results['members']}) == 1 and results['members'][0]['train_rows'] == 64
  assert results['test/accuracy'] > 50  # 4 balanced synthetic classes: chance is 25
  # The probe on CBOW's frozen features (its mean embeddings) trains the same way.
  probe = config_utils.load_config_module('classify').get_config(f'features={tmp_path / "cbow"},tiny')
  probe.num_epochs = 3
  out = train.train_and_evaluate(probe, str(tmp_path / 'probe'))
  assert out['members_reported'] == 5 and 'test/accuracy_std' in out and out['test/accuracy'] > 50


# ------------------------------------------------------------------------------------------------ length buckets
def _bucketed(order, lengths, batch_size=4, per_call=3, window=2, seed=1, epoch=0):
  return ip.length_bucketed(order, lengths, batch_size=batch_size, steps_per_call=per_call, window=window,
                            seed=seed, epoch=epoch)


def test_length_bucketed_keeps_rows_and_windows_and_sorts_chunks():
  """A permutation that leaves the dropped tail alone, keeps every row in its window, and cuts each window
  into chunks whose length ranges do not overlap (each chunk is a run of the window's sorted lengths)."""
  rng = np.random.default_rng(3)
  num_docs, batch_size, per_call, window = 118, 4, 3, 2  # 29 batches = 4 windows of 6 + one of 3 + 2
  lengths = rng.integers(1, 60, num_docs)
  order = rng.permutation(num_docs)
  out = _bucketed(order, lengths, batch_size, per_call, window)
  used = (num_docs // batch_size) * batch_size
  assert sorted(out.tolist()) == list(range(num_docs))
  np.testing.assert_array_equal(out[used:], order[used:])
  span, chunk = window * per_call * batch_size, per_call * batch_size
  for start in range(0, used, span):
    stop = min(start + span, used)
    assert set(out[start:stop]) == set(order[start:stop])
    pieces = [lengths[out[s:min(s + chunk, stop)]] for s in range(start, stop, chunk)]
    pieces.sort(key=lambda p: (p.min(), p.max()))
    for a, b in zip(pieces, pieces[1:]):
      assert a.max() <= b.min()
    partial = (stop - start) % chunk  # the final window's last 2 batches: its longest rows, kept last
    if partial:
      assert lengths[out[stop - partial:stop]].min() >= lengths[out[start:stop - partial]].max()
      assert stop == used and stop - partial > start


def test_length_bucketed_is_a_pure_function_of_seed_and_epoch():
  rng = np.random.default_rng(4)
  lengths, order = rng.integers(1, 40, 96), rng.permutation(96)
  a = _bucketed(order, lengths, epoch=0)
  np.testing.assert_array_equal(a, _bucketed(order, lengths, epoch=0))
  assert not np.array_equal(a, _bucketed(order, lengths, epoch=1))
  assert not np.array_equal(a, _bucketed(order, lengths, seed=2))
  with pytest.raises(ValueError, match='length_buckets'):
    _bucketed(order, lengths, window=0)


def test_length_bucketed_chunks_pad_less_than_random_chunks():
  """Padded positions of the tokens batches train_chunks builds, against the same order unsorted."""
  split = _split(num_docs=240, seed=5)
  order = ip.epoch_order(0, 0, split.num_docs)
  bucketed = _bucketed(order, ip.token_lengths(split), batch_size=8, per_call=3, window=10)

  def padded(o, widths=ip.TOKEN_WIDTHS):
    total = 0
    for _, _, b in ip.train_chunks('tokens', split, [o], per_member=False, batch_size=8, start_step=0,
                                   steps_per_call=3, sharded=True, widths=widths):
      width = b['tokens'].shape[-1]
      smaller = [w for w in widths if w < width]
      assert width in widths and width > b['lengths'].max()
      assert not smaller or b['lengths'].max() >= smaller[-1]  # the smallest width that fits
      total += int(np.prod(b['tokens'].shape))
    return total

  real = int(np.diff(split.tokens.offsets).sum())
  assert real <= padded(bucketed, ip.FINE_TOKEN_WIDTHS) < padded(bucketed) < padded(order)
  assert set(ip.TOKEN_WIDTHS) < set(ip.FINE_TOKEN_WIDTHS)
  # A bucketed epoch's widths add the split's own widest batch: sentences cut at 200 tokens pad to 208, not 256.
  assert ip.bucket_widths(200) == tuple(sorted(ip.FINE_TOKEN_WIDTHS + (208,)))
  assert ip.token_width(200, ip.bucket_widths(200)) == 208 and ip.token_width(192, ip.bucket_widths(200)) == 208
  assert ip.token_width(191, ip.bucket_widths(200)) == 192 and ip.bucket_widths(63) == ip.FINE_TOKEN_WIDTHS
  _, widths = ip.epoch_rows(order, split, window=10, batch_size=8, steps_per_call=3, seed=0, epoch=0)
  assert widths == ip.bucket_widths(int(ip.token_lengths(split).max()))


def test_pad_to_multiple_of_pads_each_chunk_to_the_next_multiple():
  """data.pad_to_multiple_of = m: every bucketed chunk is as wide as the smallest multiple of m above its
  longest sequence (by brute force over the chunks); for m dividing 4 (every fine width is a multiple of 4) no
  chunk pads more than with the fine widths."""
  split = _split(num_docs=240, seed=5)
  order = ip.epoch_order(0, 0, split.num_docs)
  longest = int(ip.token_lengths(split).max())
  assert ip.bucket_widths(200, 8) == tuple(range(8, 209, 8)) and ip.bucket_widths(200, 16)[-1] == 208
  assert ip.bucket_widths(15, 8) == (8, 16) and ip.bucket_widths(16, 8) == (8, 16, 24)
  assert ip.bucket_widths(200, 0) == ip.bucket_widths(200)  # 0: the fine widths
  for multiple in (1, 3, 4, 8):
    bucketed, widths = ip.epoch_rows(order, split, window=10, batch_size=8, steps_per_call=3, seed=0, epoch=0,
                                     multiple=multiple)
    assert widths == ip.bucket_widths(longest, multiple)
    total = {}
    for name, ws in (('multiple', widths), ('fine', ip.bucket_widths(longest))):
      total[name] = 0
      for _, _, b in ip.train_chunks('tokens', split, [bucketed], per_member=False, batch_size=8, start_step=0,
                                     steps_per_call=3, sharded=True, widths=ws):
        width, most = b['tokens'].shape[-1], int(b['lengths'].max())
        if name == 'multiple':
          assert width == min(w for w in range(multiple, 10 * longest, multiple) if w > most)
        total[name] += int(np.prod(b['tokens'].shape))
    if 4 % multiple == 0:
      assert total['multiple'] <= total['fine']


def test_length_buckets_is_checked_before_the_data_loads():
  config = config_utils.load_config_module('sentence_ae').get_config('method=binary_ae,tiny,buckets=2')
  assert config.data.length_buckets == 2
  train.check_length_buckets(config, methods.method_class(config.model.name))  # fine
  for bad in (-1, 1.5, True, '4'):
    plain = ml_collections.ConfigDict({'data': {'length_buckets': bad}, 'model': {'name': 'sentence_ae'}})
    with pytest.raises(ValueError, match='data.length_buckets'):
      train.check_length_buckets(plain, methods.method_class('sentence_ae'))
  bow = config_utils.load_config_module('bow_vae').get_config('tiny')
  bow.data.length_buckets = 2
  with pytest.raises(ValueError, match='data.length_buckets groups token sequences'):
    train.check_length_buckets(bow, methods.method_class(bow.model.name))
  assert 'length_buckets' not in config_utils.load_config_module('sentence_ae').get_config('tiny').data
  for name in ('sentence_ae', 'discrete_vae'):
    module = config_utils.load_config_module(name)
    assert 'pad_to_multiple_of' not in module.get_config('tiny,buckets=2').data  # absent unless asked
    padded = module.get_config('tiny,buckets=2,pad_to_multiple_of=8')
    assert padded.data.pad_to_multiple_of == 8
    train.check_length_buckets(padded, methods.method_class(padded.model.name))  # fine
  for bad in (-8, 2.5, True, '8'):
    plain = ml_collections.ConfigDict({'data': {'length_buckets': 2, 'pad_to_multiple_of': bad},
                                       'model': {'name': 'sentence_ae'}})
    with pytest.raises(ValueError, match='data.pad_to_multiple_of .* must be an integer >= 0'):
      train.check_length_buckets(plain, methods.method_class('sentence_ae'))
  unsorted = config_utils.load_config_module('sentence_ae').get_config('tiny,pad_to_multiple_of=8')
  with pytest.raises(ValueError, match='data.length_buckets is off: set it too'):
    train.check_length_buckets(unsorted, methods.method_class(unsorted.model.name))


@pytest.mark.parametrize('multiple', [0, 8])
def test_training_with_length_buckets_uses_the_bucketed_order(tmp_path, monkeypatch, multiple):
  """A tiny binary autoencoder with buckets=2 trains on `length_bucketed` orders, once per epoch, padded to the
  fine widths or (pad_to_multiple_of=8) to multiples of 8."""
  calls = []
  original = ip.length_bucketed

  def spy(order, lengths, **kw):
    calls.append(kw)
    return original(order, lengths, **kw)

  monkeypatch.setattr(ip, 'length_bucketed', spy)
  widths_seen = []
  original_chunks = ip.train_chunks

  def chunks_spy(*args, **kw):
    widths_seen.append(kw.get('widths'))
    return original_chunks(*args, **kw)

  monkeypatch.setattr(ip, 'train_chunks', chunks_spy)
  config = config_utils.load_config_module('sentence_ae').get_config(
      f'method=binary_ae,tiny,buckets=2,pad_to_multiple_of={multiple}')
  config.num_epochs = 2
  result = train.train_and_evaluate(config, str(tmp_path))
  assert [c['epoch'] for c in calls] == [0, 1]
  longest = int(ip.token_lengths(train.load_data(config).splits['train']).max())
  epochs_widths = [w for w in widths_seen if w is not None]
  assert epochs_widths  # the epochs' chunks
  if multiple:
    assert all(w == tuple(range(8, w[-1] + 1, 8)) and w[-1] - 8 <= longest < w[-1] for w in epochs_widths)
  else:
    assert all(set(ip.FINE_TOKEN_WIDTHS) <= set(w) for w in epochs_widths)
  assert all(c['window'] == 2 and c['batch_size'] == config.batch_size for c in calls)
  assert np.isfinite(result['test/perplexity'])


def test_model_fields_a_config_may_lack_are_read_through_the_methods_absent_means():
  """The methods read a model field a config may lack with `setting` (whose table, `absent_means`, the
  checkpoint's settings check reads too), never with a default of their own, and every such field is in a
  method's table."""
  declared = set().union(*(methods.method_class(name).absent_values() for name in methods.names()))
  read = set()
  for path in sorted(pathlib.Path(methods.__file__).parent.glob('*.py')):
    source = path.read_text()
    assert not re.findall(r"(?:\bmc|self\.config|model_config)\.get\('", source), path.name
    read |= set(re.findall(r"setting\((?:mc, )?'(\w+)'", source))
  assert read and read <= declared, read - declared
