"""OpenAI-compatible router: the body's "model" picks a route, weights pick an endpoint, least outstanding requests
pick a replica, and the response streams back unchanged. Routes come from a pluggable RouteSource polled each second.
"""
