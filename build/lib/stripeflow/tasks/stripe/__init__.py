"""Stripe: normalising events into `Payment`s, and the API client used to enrich them."""
