"""The gateway: one HTTP front door (`/api/v1`) over every service's RPC. It owns no data."""
