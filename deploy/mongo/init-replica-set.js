// Initiates the three-member replica set `rs0` once; a no-op when it already exists.
// Run by the one-shot `mongo-init` job of deploy/docker-compose.production.yml (mongosh).
try {
  rs.status();
  print("replica set rs0 already initiated");
} catch (e) {
  rs.initiate({
    _id: "rs0",
    members: [
      { _id: 0, host: "mongo-1:27017", priority: 2 },
      { _id: 1, host: "mongo-2:27017", priority: 1 },
      { _id: 2, host: "mongo-3:27017", priority: 1 },
    ],
  });
  print("replica set rs0 initiated");
}
