"""Monthly budget alerts: 80 % and 100 % of the budget, recorded once, delivered to a webhook.

The design, and why
-------------------
* **Where the check runs.** A subscription, ``budget-alerts`` (``crossing.BudgetCheck``), runs
  wherever the projections run (``app.pipeline.backend.projection_services``: ``chronos worker``,
  ``chronos serve`` with workers or projections, ``chronos ingest --wait``). For every batch of
  events holding a ``CostIncurred`` it sums the month's spend *from the log* -- the cost_ledger
  projection may trail it, and a check that read the projection could miss the crossing for good
  if no later cost came -- and appends what was crossed. Only this month and the one before are
  checked: a subscription catching up over old history does not alert about last year.
* **Exactly once, with several processes racing.** A crossing is a ``BudgetThresholdCrossed`` in
  the stream ``budget-YYYY-MM`` whose event id is derived from the month and the threshold
  (``app.catalogue.ids.budget_alert_event_id``). The store's event ids are unique, and appending a
  stored id again is a no-op that says so (``AppendResult.duplicate``), so however many checkers see
  the crossing at once, one event is stored. 80 % is always appended before 100 %.
* **Delivery is outside any transaction.** Holding the subscription's transaction open through HTTP
  retries would hold back every subscriber of the log (events/subscription.py), so delivery is a
  service of its own (``delivery.Deliverer``): it looks for alerts of this and last month with no
  ``BudgetAlertDelivered``, takes a session advisory lock per alert (one process POSTs it; no
  transaction stays open), reads the stream again under the lock, POSTs, and records the outcome
  as an event in the same stream: ``BudgetAlertDelivered`` (its id derived from the alert: at most
  one) or ``BudgetAlertDeliveryFailed``. The outcome being in the log makes it visible everywhere
  the log is read: ``chronos costs``, ``GET /costs`` and the dashboard, and ``chronos check`` (an
  alert not delivered is a warning).
* **Retries.** Each delivery tries ``CHRONOS_ALERT_WEBHOOK_ATTEMPTS`` times (default 5) with
  exponential backoff (1 s doubling to 30 s, a ``Retry-After`` honoured) on connection errors,
  timeouts, 408, 429 and 5xx; another 4xx is the webhook refusing the request and is not retried.
  A delivery whose attempts all fail is tried again ``REDELIVER_AFTER_S`` later, for at most
  ``MAX_ROUNDS`` rounds; after that it stays failed (``chronos check`` says so) until
  ``chronos costs --resend-alerts``.
* **At least once, not exactly once, on the wire.** A process dying after the webhook answered and
  before ``BudgetAlertDelivered`` was appended sends the alert again after a restart; a webhook
  cannot be made part of a database transaction. The body carries ``alert_id`` for receivers that
  want to drop repeats.
"""
