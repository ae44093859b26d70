"""HTTP building blocks shared by every service: app factory, errors, middleware, clients."""
