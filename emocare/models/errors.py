"""Errors raised while building models."""


class BackboneNotFound(RuntimeError):
    """Backbone weights could not be found (offline): the message names where we looked and the ways out."""
