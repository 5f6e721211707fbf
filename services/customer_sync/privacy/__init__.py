"""A person's data rights: erasure and its tombstones, what anonymising keeps, staff deletion,
rectification, and consent captured at checkout."""
