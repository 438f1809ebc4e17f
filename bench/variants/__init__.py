"""
Settings variants for measuring options without touching the service (``--settings variants.X``).
Each imports the service's settings and changes one thing; what pays off goes into the service.
"""
