"""Stripeflow: Stripe payments to CRM deals, invoices, messages and reports, exactly once, on Prefect."""

__version__ = "0.1.0"
