"""Humans as the oracle: functions whose outputs are labels people give (issue 13).

- ``definition``: ``CREATE FUNCTION … LANGUAGE labels`` read and checked;
- ``requests``: where a query would run the model, its uncached inputs become label requests;
- ``store``: every read and write of the queue, the history, the tokens and the labels;
- ``versions``: relabelling makes a new version of the function;
- ``calls``: ``sieve.label`` / ``sieve.unlabel`` / ``sieve.labelling_link`` / ``sieve.status_link``;
- ``desk``: the Python API the web face serves the labelling page from.
"""
