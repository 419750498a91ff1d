"""Projections of the event log: documents, chunks, vectors, cost ledger, embedding cache.

Each projector is an ``events.Subscription`` handler: it writes its rows in the transaction that
also moves its checkpoint (exactly once), and applying an event twice changes nothing. See
``projections.runner`` to run them and ``projections.replay`` to rebuild them from the log.
"""
