"""
Content negotiation with a shortcut for what nearly every API client sends.

DRF's ``DefaultContentNegotiation`` parses the query string (a ``?format=`` override) and the
Accept header into media types for every request, then matches them against each renderer:
1.8 % of the servers' CPU in bench/'s directed sends (bench/JOURNAL.md, finding 37). A request
without a query string whose Accept is absent, ``*/*`` or ``application/json`` gets the answer DRF
would give, the JSON renderer, without that work; anything else is negotiated by DRF as before.
"""

from rest_framework.negotiation import DefaultContentNegotiation

_JSON = "application/json"
_PLAIN_ACCEPTS = frozenset({"*/*", _JSON})


class JSONFirstContentNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        if renderers and format_suffix is None and renderers[0].media_type == _JSON:
            meta = request._request.META
            if not meta.get("QUERY_STRING") and meta.get("HTTP_ACCEPT", "*/*") in _PLAIN_ACCEPTS:
                return renderers[0], _JSON
        return super().select_renderer(request, renderers, format_suffix)
