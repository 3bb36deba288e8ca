"""Writes of the metering domain, one module per use case:
plans (price plans and subscriptions), ingestion (usage in, rated on the way), folding
(rated usage into monthly summaries), reconciliation and re-rating."""
