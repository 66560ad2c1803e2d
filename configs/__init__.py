"""dtr's configs: one `get_config(arg)` per family, in the big_vision style (`--config=configs/X.py:args`).

The folder stays at the top of the repository and is installed as the package `dtr.configs`, so
`python -m dtr.main --config=configs/ammi.py ...` and notebooks (`from dtr.configs import ammi`) work from
any directory after `pip install`. `common.py` holds the loop's shared defaults.
"""
