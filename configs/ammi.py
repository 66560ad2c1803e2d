r"""AMMI document hashing (Stratos & Wiseman, ICML 2020) with the reference code's tuned settings.

Runs (from the repository root):

  # default: Reuters, 64 bits (synthetic corpus, loudly announced, if no data folder is set)
  python -m dtr.main --config=configs/ammi.py --workdir=/tmp/ammi
  # a tuned cell: dataset in {ng20, reuters, tmc}, bits in {16, 32, 64, 128}
  DTR_DATA_DIR=../shared/data python -m dtr.main --config=configs/ammi.py:dataset=ng20,bits=16 --workdir=/tmp/ng16
  # tiny: the synthetic corpus, a few epochs; seconds on a laptop (used by the tests)
  python -m dtr.main --config=configs/ammi.py:tiny --workdir=/tmp/tiny
  # any field: --config.model.entropy_weight=2.5 --config.batch_size=64 --config.seed=1
  # your own corpus: a CSV (text and label columns; headerless files: --config.data.csv_header=False and column
  # numbers) or a folder of .txt files (label = subfolder), with generic settings
  python -m dtr.main --config=configs/ammi.py:dataset=csv,path=my.csv,text=text,label=label,bits=32 --workdir=/tmp/mine

  # random search: 100 settings of one cell in one compiled program, best member on validation
  python -m dtr.main --config=configs/ammi.py:dataset=ng20,bits=16,population=100 --workdir=/tmp/ng16_search
  # the same with successive halving (keep the best third after epochs 4, 8, 16) and a cheaper validation
  python -m dtr.main --config=configs/ammi.py:dataset=ng20,bits=16,population=100,search=halving --workdir=/tmp/s

  # dtr's re-tuned settings for the shared files (chosen on validation; see RETUNED below)
  DTR_DATA_DIR=../shared/data python -m dtr.main --config=configs/ammi.py:dataset=ng20,bits=64,settings=dtr --workdir=/tmp/ng64
  # AMMI with views (dtr.methods.ammi), searched the way the NG20 entries were found: 33 settings x 3 seeds
  DTR_DATA_DIR=../shared/data python -m dtr.main --config=configs/ammi.py:dataset=ng20,bits=32,settings=dtr,views=0.8,population=99,search=halving --config.population_replicas=3 --config.num_epochs=100 --workdir=/tmp/s32

Arguments: dataset, bits, settings (published: the reference's tuned table; dtr: RETUNED on top of it where
a cell has an entry), tiny (the test configuration), runlocal (few epochs, for a quick look), bmmi (the
exact brute-force entropy instead of the adversarial prior; bits <= 16), views (d > 0: H(Z|Y) becomes the
cross entropy to a view of the document with words dropped at rate d, see dtr.methods.ammi; a population
then also searches d), population (number of settings
trained at once; `population_search` says what they draw), search (full: every member to its own early
stop; halving: successive halving with a 1000-query validation, see dtr.population), path, text, label (your
own corpus: data.path, data.text_column, data.label_column; labels pick the best epoch by precision@100, so
'none', a corpus without labels, is refused before training). A dataset/bits
without a tuned cell gets GENERIC settings; the run prints which settings it uses.
"""

import ml_collections

from dtr import config_utils
from dtr.configs import common
from dtr.methods.ammi import default_model_config

# Tuned settings of the reference code (random search on validation data), o = 0, r = 3, prior lr = lr.
# bits: (prior hidden H, prior layers, batch, lr, init range, clip, seed, G, raw prior, beta)
TUNED = {
    'tmc': {16: (24, 1, 64, 0.01, 0.5, 1, 4997, 4, True, 3.0),
            32: (16, 0, 256, 0.003, 0.5, 10, 87751, 1, False, 2.0),
            64: (20, 0, 128, 0.03, 0.5, 5, 24547, 2, False, 3.5),
            128: (12, 1, 128, 0.03, 0.5, 1, 69075, 1, False, 3.5)},
    'ng20': {16: (28, 1, 64, 0.003, 0.1, 5, 57000, 4, True, 2.5),
             32: (28, 2, 16, 0.01, 0.05, 1, 28082, 4, True, 3.5),
             64: (20, 0, 128, 0.03, 0.5, 5, 24547, 2, False, 3.5),
             128: (8, 0, 128, 0.01, 0.5, 5, 38414, 4, False, 3.5)},
    'reuters': {16: (16, 0, 16, 0.01, 0.1, 10, 9061, 4, True, 2.0),
                32: (20, 1, 64, 0.003, 0.5, 1, 67425, 1, False, 2.0),
                64: (28, 1, 16, 0.003, 0.5, 1, 86088, 1, False, 3.0),
                128: (24, 1, 16, 0.03, 0.1, 5, 36782, 2, True, 2.5)},
}


# For a corpus without a tuned cell (the user's own csv or folder): the setting the reference tuned for both
# ng20/64 and tmc/64, a batch large enough for corpora of any size.
GENERIC = (20, 0, 128, 0.03, 0.5, 5, 0, 2, False, 3.5)

# Changes to TUNED that dtr found on the shared files, each chosen on validation precision only and
# measured on test over 3 seeds; how each was found, and what lost: docs/results/ammi.md.
RETUNED = {
    ('ng20', 16): {'batch_size': 512, 'num_epochs': 100, 'model.view_dropout': 0.87765,
                   'model.learning_rate': 0.112203, 'model.entropy_weight': 4.73491, 'model.clip': 1.0,
                   'model.init_scale': 0.1},
    ('ng20', 32): {'batch_size': 512, 'num_epochs': 100, 'model.view_dropout': 0.76216,
                   'model.learning_rate': 0.040567, 'model.entropy_weight': 2.87483, 'model.clip': 1.0,
                   'model.init_scale': 0.1},
    ('ng20', 64): {'batch_size': 512, 'num_epochs': 100, 'model.view_dropout': 0.77023,
                   'model.learning_rate': 0.078391, 'model.entropy_weight': 2.11507, 'model.clip': 1.0,
                   'model.init_scale': 0.05},
    ('ng20', 128): {'batch_size': 512, 'num_epochs': 100, 'model.view_dropout': 0.65925,
                    'model.learning_rate': 0.041588, 'model.entropy_weight': 3.79234, 'model.clip': 0.0,
                    'model.init_scale': 0.1},
    ('reuters', 32): {'model.prior_steps': 4, 'model.learning_rate': 0.02652, 'model.entropy_weight': 2.904,
                      'model.clip': 5.0, 'model.init_scale': 0.1},
    ('reuters', 128): {'batch_size': 64, 'model.learning_rate': 0.01},
}


def common_config() -> ml_collections.ConfigDict:
  """The shared loop fields (configs/common.py) with AMMI's model and its population search space."""
  config = common.get_config()
  config.model = default_model_config()
  config.population_search = ml_collections.ConfigDict(dict(  # what members 1..P-1 draw
      learning_rate='log_uniform(0.001,0.05)',
      entropy_weight='uniform(1.5,4.0)',
      init_scale='choice(0.05,0.1,0.5)',
      clip='choice(0,1,5,10)',
  ))
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_utils.parse_arg(arg, dataset='reuters', bits=64, settings='published', tiny=False,
                               runlocal=False, bmmi=False, population=0, search='full', views=0.0, path='',
                               text='', label='')
  if arg.settings not in ('published', 'dtr'):
    raise ValueError(f'settings={arg.settings!r}: use published (the reference tuning) or dtr (RETUNED).')
  config = common_config()
  config.data.name = arg.dataset
  config.model.bits = arg.bits
  config.model.bmmi = arg.bmmi
  if arg.path:
    config.data.path = arg.path
  if arg.text:
    config.data.text_column = arg.text
  if arg.label:
    config.data.label_column = '' if arg.label == 'none' else arg.label
  cell = TUNED.get(arg.dataset, {}).get(arg.bits)
  tuned_for = arg.dataset
  if cell is None:  # a corpus of the user's own (csv, folder, ...) or an untuned length
    cell, tuned_for = GENERIC, ''
  (h, layers, batch, lr, init, clip, seed, g, raw, beta) = cell
  config.model.update(prior_hidden=h, prior_layers=layers, learning_rate=lr, init_scale=init, clip=float(clip),
                      prior_steps=g, prior_raw=raw, entropy_weight=beta)
  config.update(batch_size=batch, seed=seed)
  retuned = RETUNED.get((arg.dataset, arg.bits), {}) if arg.settings == 'dtr' else {}
  for dotted, value in retuned.items():
    config_utils.set_dotted(config, dotted, value)
  config.settings = (f'{"dtr" if retuned else "published"} settings of the {arg.dataset}/{arg.bits} cell'
                     if tuned_for else f'generic settings for a corpus of your own (no tuned {arg.dataset}/'
                     f'{arg.bits} cell): the reference\'s ng20/64 = tmc/64 setting')
  config.tuned_for = tuned_for
  if arg.tiny:
    common.tiny_synthetic(config)
    common.set_evals(config, ['precision@10'], 'precision@10')
    config.settings, config.tuned_for = 'the tiny test settings (synthetic corpus)', 'synthetic'
    config.model.update(bits=16 if arg.bits == 64 else arg.bits, prior_steps=2, learning_rate=0.03,
                        init_scale=0.1, entropy_weight=2.0)
  if arg.views:  # view-consistent AMMI (dtr.methods.ammi): the search also draws the view's dropout rate
    config.model.view_dropout = float(arg.views)
    config.population_search.update(view_dropout='uniform(0.5,0.95)', entropy_weight='uniform(1.5,6.0)')
  config.population = arg.population
  if arg.search == 'halving':  # successive halving, settings ranked on 1000 validation queries per epoch
    config.update(population_prune_epochs='4,8,16', population_valid_queries=1000)
  elif arg.search != 'full':
    raise ValueError(f'search={arg.search!r}: use full (every member to its own early stop, whole validation '
                     'split every epoch) or halving (successive halving after epochs 4, 8 and 16, ranking on '
                     '1000 validation queries, the 10 best re-validated on the whole split).')
  if arg.runlocal:
    config.update(num_epochs=3)
  return config
