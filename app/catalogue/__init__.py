"""The document event catalogue: the contract between intake, the stages, the projections and the API.

* ``events``: one frozen class per event type, with its ``TYPE`` and ``VERSION``;
* ``codec``: the only place that turns stored payloads into those classes (upcasting old versions)
  and classes into payloads to append;
* ``ids``: every derived identifier (uuid5) in one place;
* ``state``: the one reducer that says where a document stands (``DocumentState.evolve``).

Every event of a document lives in the stream ``document-<document_id>``. Metadata carries
``correlation_id`` (the upload or request that started the work), ``causation_id`` (the event that
caused this one), ``job_id`` (stage results) and ``actor`` (``cli``, ``api``, ``worker:<host>:<pid>``,
``directus``, a token id ...). ``events/`` (the store) never imports this package.
"""
