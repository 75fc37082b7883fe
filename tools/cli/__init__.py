"""Helpers shared by the command-line tools (not part of the library):

* :mod:`.errors`: one-line errors, exit status 2, ``--debug``;
* :mod:`.config_checks`: config loading and dataset/work-dir checks;
* :mod:`.data_checks`: diagnoses of dataset errors raised deep inside;
* :mod:`.checkpoint_checks`: strict checkpoint checks for test and resume;
* :mod:`.dist_env`: distributed set-up on machines without CUDA;
* :mod:`.eval_report`, :mod:`.paper_results`: evaluation reports.
"""
