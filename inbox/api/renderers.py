import orjson
from django.utils.functional import Promise
from rest_framework.renderers import JSONRenderer


def _default(obj):
    if isinstance(obj, Promise):
        return str(obj)
    raise TypeError


class FastJSONRenderer(JSONRenderer):
    """JSON via orjson; falls back to DRF's encoder for anything orjson cannot encode."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        try:
            return orjson.dumps(data, default=_default)
        except TypeError:
            return super().render(data, accepted_media_type, renderer_context)
