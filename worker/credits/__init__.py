"""Credits: the ledger, accounts and their keys, signups, payments and refunds, reconcile."""
