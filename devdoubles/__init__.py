"""Development doubles the product can be pointed at but never imports: the in-memory MongoDB
behind `MONGO_URI=mongomock://` for tests, `make run` and `make demo`. Not in the service image
(deploy/Dockerfile copies `shared/` and `services/` only)."""
