"""Security primitives shared by the services: access tokens, passwords, permissions."""
