"""The HTTP edge: blueprints, authentication, request parsing. Domain logic lives in sync/."""
