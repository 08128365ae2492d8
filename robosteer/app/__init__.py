"""The application wing: the jobs built from the floors below (model, data, circuits, train, sim).

- ``policy.py``: policy files (``policy.json``: a base model plus an adapter) and the policy callable
  the simulator runs;
- ``experiment.py``: the steps of one few-shot steering experiment (collect, discover, finetune, evaluate);
- ``pretrain.py``: the default policy's pretraining recipe (collection + training);
- ``sim_probes.py``: probe pairs built in the simulator for the causal scorers;
- ``study.py``: the steering study's runner (cells, methods, rank-band controls);
  ``study_grid.py``: its learning-rate grid; ``study_report.py``: its tables and goal checks,
  ``study_figures.py`` its figures, ``study_bands.py`` the rank-band question;
- ``cli.py``: the ``evaluate``, ``finetune`` and ``pretrain`` commands.

Nothing below imports this package, apart from the ``discover`` command (``robosteer.circuits.cli``),
which builds the sim probes of ``sim_probes.py`` (``tests/test_architecture.py`` checks the floors).
"""
