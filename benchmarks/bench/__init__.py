"""What ``benchmarks/table1.py``, ``benchmarks/table2.py`` and ``benchmarks/faithful.py`` share: the paper's tables on
MADE (synthetic) data, every method trained and scored through the bundle's own workflows.

* :mod:`.settings`: :class:`~.settings.Settings` (data, budget, scoring options) and their command-line options;
* :mod:`.data`: the made healthy, test and labelled validation sets;
* :mod:`.jobs`: bundle commands: building them (the one place the ``--config_file`` list is made), running them,
  caching them in the work folder, running several side by side;
* :mod:`.methods`: the method specifications and their steps: train, evaluate, calibrate (AutoDDPM), tune (FLAIR);
* :mod:`.report`: the Markdown tables and figures;
* :mod:`.main`: the entry point of every benchmark (its parser and run) and the command line of a table script;
* :mod:`.configs`: the one builder of the config list (``inference.yaml`` first) and configured components from
  Python, for the benchmarks and the tests;
* :mod:`.reference`: the authors' slow scoring procedure, the tests' and ``scoring_speed``'s oracle;
* :mod:`.frontier`: the parts of ``benchmarks/frontier.py``, one job a module;
* :mod:`.spread`: mean ± SD over seeds.
"""
