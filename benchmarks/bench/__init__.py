"""What ``benchmarks/table1.py``, ``benchmarks/table2.py`` and ``benchmarks/faithful.py`` share: the paper's tables on
MADE (synthetic) data, every method trained and scored through the bundle's own workflows.

* :mod:`.settings`: :class:`~.settings.Settings` (data, budget, scoring options) and their command-line options;
* :mod:`.data`: the made healthy, test and labelled validation sets;
* :mod:`.jobs`: bundle commands: building them (the one place the ``--config_file`` list is made), running them,
  caching them in the work folder, running several side by side;
* :mod:`.methods`: the method specifications and their steps: train, evaluate, calibrate (AutoDDPM), tune (FLAIR);
* :mod:`.report`: the Markdown tables and figures;
* :mod:`.main`: the command line of a table script.
"""
