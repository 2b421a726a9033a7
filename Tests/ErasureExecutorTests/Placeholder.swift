// Replaced by the erasure-executor tests.
