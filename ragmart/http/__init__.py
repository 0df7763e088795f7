"""`ragmart serve`: the HTTP retrieval service (FastAPI on uvicorn).

ragmart.http.app builds the application; .models holds the request and response bodies (what a
client reads), .keys the API keys (a request's groups come from its key only), .pool the readers
that follow the serving pointer, .limits the bounds, .metrics the Prometheus metrics.
"""
