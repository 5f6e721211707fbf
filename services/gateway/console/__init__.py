"""The admin console: server-rendered pages for store staff, served by the gateway under
/console. It is a client of the gateway's own HTTP API inside the process (see api.py), so it
has no business logic and no permissions of its own."""
