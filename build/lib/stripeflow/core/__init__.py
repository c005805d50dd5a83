"""The core: the Payment model, money, the ledger, configuration, errors and the HTTP seam."""
