r"""Low-resource text classification: CBOW on a label budget, or a probe on a pretrained workdir's features.

Runs (from the repository root; DTR_DATA_DIR=../shared/data for the real corpora):

  # CBOW (Jin et al. 2020's baseline) on 200 labels of dbpedia14, 5 random subsamples as 5 members
  python -m dtr.main --config=configs/classify.py:method=cbow,dataset=dbpedia14,labels=200 --workdir=/tmp/cbow200
  # a probe on the frozen features of a finished pretraining workdir (any method with `features`)
  python -m dtr.main --config=configs/classify.py:features=/tmp/pretrained,labels=200 --workdir=/tmp/probe200
  # ... on its codes, re-embedded by new trainable embeddings (symbol codes)
  python -m dtr.main --config=configs/classify.py:features=/tmp/pretrained,labels=200,reembed=True --workdir=/tmp/re200
  # tiny: the synthetic corpus (seconds; the tests)
  python -m dtr.main --config=configs/classify.py:method=cbow,tiny --workdir=/tmp/cbow_tiny

Arguments: method (cbow; probe when `features` is given), dataset, labels (200, 500, 2500 or all: N random
labelled training examples per subsample, `data.labels`), seeds (subsamples, `data.label_seeds`, 5),
features (a pretraining workdir), reembed, normalize (none; example: standardise each feature vector over
its dimensions, `dtr.methods.probe`; feature: standardise each dimension over the training split,
`data.feature_standardize` of `dtr.probe`), kind (features, codes or samples: the mean of `samples` sampled
codes), overrides (fields of the pretrained model's config, ';'-separated, e.g. probe_features=zeros_ones),
hidden (probe MLP widths, e.g. 32-32), activation (relu, leaky_relu, tanh), tiny, runlocal.
results.json: `test/accuracy` (mean over the subsamples, %) and `test/accuracy_std`; early stopping on each
member's validation accuracy (the corpus' valid split).
Populations (`--config.population=P`, one compiled program) search the learning rate and, when the probe
has hidden layers and dropout (> 0), its dropout; every setting trains on each of the `seeds` label
subsamples (P = settings x seeds; setting 0 is the plain run), settings are ranked by their mean validation
accuracy over them, and results.json gives the chosen setting's mean and std, e.g. 4 settings x 5 subsamples:
  python -m dtr.main --config=configs/classify.py:features=/tmp/pretrained,labels=200,hidden=32-32 \
    --config.model.dropout=0.2 --config.population=20 "--config.population_search.dropout=uniform(0,0.5)" \
    --workdir=/tmp/probe_search

Per budget, the schedule of Jin et al.'s downstream training (batch, patience; Adam 3e-4): 200: 8, 10;
500: 16, 10; 2500: 32, 5; all: 64, 5. dtr validates once per epoch (the reference every 25 / 30 / 100 / 500
steps: one epoch at 200 labels). Other budgets (labels=N) get the batch of the next of these and at least its
patience in steps (`schedule`).
"""

import ml_collections

from dtr import config_utils
from dtr.configs import common

BUDGETS = {'200': (8, 10, 1000), '500': (16, 10, 1000), '2500': (32, 5, 500), 'all': (64, 5, 200)}  # batch, patience, epoch cap
# The reference's patience in steps (validation interval x patience) at each budget.
PATIENCE_STEPS = {'200': 25 * 10, '500': 30 * 10, '2500': 100 * 5, 'all': 500 * 5}


def schedule(budget: str) -> tuple[int, int, int]:
  """(batch, patience in epochs, epoch cap) of a label budget: Jin et al.'s at 200, 500, 2500 and all. Another
  budget N takes the batch of the smallest of those at least N ('all' above 2500), and as many epochs of
  patience as give at least that budget's patience in steps (dtr validates once per epoch, and a small budget's
  epoch is a few steps: 32 labels at batch 8 are 4 steps an epoch, so they wait 63 epochs, 252 steps, for the
  reference's 25 x 10 at 200 labels); the cap is 4 x the patience, at least the budget's own."""
  if budget in BUDGETS:
    return BUDGETS[budget]
  n = int(budget)
  ref = next((b for b in ('200', '500', '2500') if n <= int(b)), 'all')
  batch, patience, cap = BUDGETS[ref]
  batch = min(batch, n)
  steps_per_epoch = -(-n // batch)
  patience = max(patience, -(-PATIENCE_STEPS[ref] // steps_per_epoch))
  return batch, patience, max(cap, 4 * patience)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_utils.parse_arg(arg, method='cbow', dataset='dbpedia14', labels='200', seeds=5, features='',
                               reembed=False, normalize='', kind='', samples=5, overrides='', hidden='', activation='',
                               tiny=False, runlocal=False)
  from dtr import methods  # pylint: disable=g-import-not-at-top
  config = common.get_config()
  common.set_evals(config, ['accuracy'], 'accuracy')
  config.update(tensorboard=False, progress_bar=False, steps_per_call=32)
  if arg.features:
    config.model = methods.default_model_config('probe')
    config.model.reembed = bool(arg.reembed)
    config.data.name = 'features'
    config.data.path = arg.features
    config.data.feature_kind = arg.kind or ('codes' if arg.reembed else 'features')
    config.data.feature_samples = int(arg.samples)
    config.data.feature_overrides = arg.overrides.replace(';', ',')
    if arg.normalize == 'feature':  # per-dimension z-scores over the training split (dtr.probe); the field
      config.data.feature_standardize = True  # exists only then, so other probes' settings digests stay
    elif arg.normalize:
      config.model.normalize = arg.normalize
  else:
    if arg.method != 'cbow':
      raise ValueError(f'method={arg.method!r}: configs/classify.py trains cbow, or a probe with features=WORKDIR '
                       '(pretrain with configs/discrete_vae.py, sentence_ae.py or bow_vae.py first).')
    config.model = methods.default_model_config('cbow')
    config.data.name = arg.dataset
  if arg.hidden:
    config.model.hidden = tuple(int(h) for h in arg.hidden.split('-'))
  if arg.activation:
    config.model.activation = arg.activation
  if arg.labels != 'all' and (not arg.labels.strip().isdigit() or int(arg.labels) < 1):
    raise ValueError(f'labels={arg.labels!r}: give a number of labelled documents per subsample (200, 500, '
                     '2500, ...) or all.')
  budget = arg.labels if arg.labels == 'all' else str(int(arg.labels))
  batch, patience, epochs = schedule(budget)
  config.update(batch_size=batch, patience=patience, num_epochs=epochs)
  config.data.labels = budget
  config.data.label_seeds = int(arg.seeds)
  if arg.tiny:
    if not arg.features:
      common.tiny_synthetic(config)
    config.data.labels = '64' if arg.labels == '200' else arg.labels
    config.update(batch_size=8, num_epochs=8, patience=100, steps_per_call=8)
    config.model.learning_rate = 1e-2
  if arg.runlocal:
    config.num_epochs = 3
  return config
