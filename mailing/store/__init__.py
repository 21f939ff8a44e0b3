"""Named queries, beside the data they touch.

Each module holds the statements on one kind of row (deliveries, stop-lists,
issues, contacts). Each statement is named for what it answers and says why it
is shaped the way it is (which index it walks, why it is one statement). Read
helpers do not commit; the use case that calls them owns the transaction.
"""
