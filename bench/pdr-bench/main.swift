// Placeholder: the pdr benchmark driver is being written (see bench/pdr.sh).
print("not yet")
