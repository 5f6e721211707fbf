"""Loss-free messaging on RabbitMQ: confirmed publishing, the retrying event handler, parking."""
