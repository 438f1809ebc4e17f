"""
The server process' plumbing: the pooled HTTP handler, the GC policy, SQLite writer fairness, and
every patch of a third party (server/patches). It knows nothing of notifications: it imports
neither ``inbox`` nor ``realtime``.
"""
