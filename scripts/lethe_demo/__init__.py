"""The Lethe system as local processes and the demo's scenario: scripts/lethe-demo plays it with a report, the
end-to-end suite (Tests/e2e) plays it and asserts on what it left."""
