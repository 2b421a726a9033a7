// Placeholder: the erasure benchmark driver is being written (see bench/erasure.sh).
print("not yet")
